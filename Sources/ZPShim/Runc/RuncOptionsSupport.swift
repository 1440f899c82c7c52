import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

// What the shim does with containerd's runc options (decision 0042): `BinaryName`, `Root`,
// `SystemdCgroup`, `NoPivotRoot` and `NoNewKeyring` go to runc (RuncDriver), `IoUid`/`IoGid` to the
// stdio pipes, `CriuPath` (containerd 1.x) to the container's CRIU, `ShimCgroup` to the shim process
// at `start`; the options that configure containerd features this shim does not have are refused.

extension RuncOptions {
    /// Refuses the options this shim cannot honour, naming each.
    /// - Throws: ``RuncOptionsError`` for `CriuImagePath`/`CriuWorkPath` (they configure containerd's
    ///   task `Checkpoint`, which this shim does not implement; its scale-down images live under the
    ///   node's state-dir) and `TaskApiAddress`/`TaskApiVersion` (a sandboxed runtime's task API).
    func checkSupported() throws(RuncOptionsError) {
        var refused: [String] = []
        if !criuImagePath.isEmpty { refused.append("CriuImagePath \(criuImagePath)") }
        if !criuWorkPath.isEmpty { refused.append("CriuWorkPath \(criuWorkPath)") }
        guard refused.isEmpty else {
            throw RuncOptionsError(
                "runc options \(refused.joined(separator: ", ")) are not supported: they configure containerd's task "
                    + "Checkpoint, which containerd-shim-zeropod-v2 does not implement (its scale-down images live under "
                    + "the node setting state-dir); remove them from the handler's options"
            )
        }
        if !taskAPIAddress.isEmpty || taskAPIVersion != 0 {
            throw RuncOptionsError(
                "runc options TaskApiAddress/TaskApiVersion are not supported: containerd-shim-zeropod-v2 serves the task API itself"
            )
        }
    }
}

/// The runc options of a container, kept in its bundle: the `delete` command (containerd lost the
/// shim) needs the same `BinaryName`, `Root` and `SystemdCgroup` as the shim that made it.
enum RuncOptionsFile {
    /// The file's name in the bundle (our protobuf encoding of `containerd.runc.v1.Options`).
    static let name = "zeropod-runc-options.pb"

    /// Writes `options` into `bundle` (nothing for the defaults).
    /// - Throws: ``SystemError``.
    static func write(_ options: RuncOptions, bundle: String) throws(SystemError) {
        guard options != RuncOptions() else { return }
        try Files.write(FilePath(bundle + "/" + name), options.encoded(), mode: 0o600)
    }

    /// The options kept in `bundle`; the defaults when there are none (or they cannot be read).
    static func read(bundle: String) -> RuncOptions {
        guard let bytes = try? Files.read(FilePath(bundle + "/" + name)) else { return RuncOptions() }
        return (try? RuncOptions(decoding: bytes)) ?? RuncOptions()
    }
}

/// The `ShimCgroup` runc option: the shim process moves itself into a cgroup at `start`, as
/// containerd-shim-runc-v2 does.
enum ShimCgroup {
    /// Writes `pid` into the cgroup `path` (relative to each hierarchy's root): on a cgroup v2 host
    /// into `/sys/fs/cgroup/<path>`; otherwise into every cgroup v1 hierarchy that has the folder.
    /// - Throws: ``RuncOptionsError`` when no hierarchy has it, or a write fails.
    static func join(
        pid: Int32,
        path: String,
        mode: CgroupHostMode = .current,
        mounts: [MountInfo] = (try? MountInfo.read()) ?? []
    ) throws(RuncOptionsError) {
        let relative = path.hasPrefix("/") ? path : "/" + path
        let hierarchies: [String]
        switch mode {
        case .unified:
            hierarchies = mounts.filter { $0.fsType == "cgroup2" && $0.root == "/" }.map(\.mountPoint)
        case .hybrid, .legacy:
            hierarchies = mounts.filter { $0.fsType == "cgroup" && $0.root == "/" }.map(\.mountPoint)
        }
        let folders = hierarchies.map { $0 + relative }.filter { access($0, F_OK) == 0 }
        guard !folders.isEmpty else {
            throw RuncOptionsError("ShimCgroup \(path) does not exist in any cgroup hierarchy")
        }
        for folder in folders {
            do {
                let fd = try OwnedDescriptor.open(FilePath(folder + "/cgroup.procs"), O_WRONLY)
                try fd.writeAll(Array("\(pid)\n".utf8))
            } catch {
                throw RuncOptionsError("ShimCgroup \(path): cannot move the shim (pid \(pid)) into \(folder): \(error)")
            }
        }
    }
}
