import Logging
import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// `delete -bundle DIR`: containerd lost the shim (killed, or gone after a restart); remove the
/// container with `runc delete --force`, unmount its rootfs, remove the dead shim's socket and report
/// a SIGKILL exit. Also removes the container's wake group entry.
public enum DeleteCommand {
    /// Runs `delete`. - Returns: The encoded `DeleteResponse` to write to stdout.
    public static func run(_ options: ShimCommandLine) async -> [UInt8] {
        let bundle = options.bundle.isEmpty ? Files.currentDirectory() : options.bundle
        // A refused settings file: clean up with the defaults (best effort) and say so on stderr,
        // which containerd logs.
        let settings = NodeSettings.load()
        if let problem = settings.problem {
            try? StandardStream.error.write(
                "delete: node settings refused, cleaning up with the defaults: \(problem)\n"
            )
        }
        let node = settings.config
        // The runc options the lost shim used (BinaryName, Root, SystemdCgroup), kept in the bundle;
        // BinaryName wins over the node setting `runc-path`.
        let runcOptions = RuncOptionsFile.read(bundle: bundle)
        let runc =
            (try? RuncDriver(namespace: options.namespace, options: runcOptions, nodeDefault: node.runcPath))
            ?? RuncDriver(namespace: options.namespace, binary: node.runcPath)
        var pid: UInt32 = 0
        if let bytes = try? Files.read(FilePath(bundle + "/init.pid")),
            let value = UInt32(String(decoding: bytes, as: UTF8.self).trimmedWhitespace)
        {
            pid = value
        }
        removePreparedRestore(id: options.id, namespace: options.namespace, runcRoot: runc.root, node: node)
        try? await runc.delete(id: options.id, bundle: bundle, force: true)
        try? MountPoints.unmount(bundle + "/rootfs")
        // The lost shim's socket: removed when nothing answers on it any more (a group's shim that
        // still serves other containers keeps it).
        if let bytes = try? Files.read(FilePath(bundle + "/address")) {
            let address = String(decoding: bytes, as: UTF8.self).trimmedWhitespace
            let path = address.hasPrefix("unix://") ? String(address.dropFirst("unix://".count)) : address
            if path.hasPrefix(StartCommand.socketDirectory + "/") && !StartCommand.canConnect(path) {
                unlink(path)
                let status = node.layout.statusSocket(forShimSocket: path)  // its status socket (0008)
                if !StartCommand.canConnect(status) { unlink(status) }
            }
        }
        // Its wake group entry (0011): a lost shim could not remove it on Delete.
        WakeGroupRegistry(layout: node.layout)
            .unlistLostMember(
                containerID: options.id,
                containerdNamespace: options.namespace,
                annotations: BundleConfig(bundle: bundle).annotations
            )
        return DeleteResponse(
            pid: pid,
            exitStatus: 128 + UInt32(SIGKILL),
            exitedAt: ProtobufTimestamp(unixNanoseconds: SystemClock.realtimeNanoseconds())
        ).encoded()
    }

    /// What a lost shim held for a scaled-down container (decision 0009): the restore it had
    /// prepared (tmpfs copies and the rootfs bind mount under runc's state folder), a `criu
    /// lazy-pages` daemon serving the images, and the images themselves.
    static func removePreparedRestore(id: String, namespace: String, runcRoot: String, node: NodeConfig) {
        // First what may still work on the images and mounts: a restore the shim had in flight.
        let killed = killRestoreLeftovers(id: id, runcRoot: runcRoot)
        if !killed.isEmpty {
            try? StandardStream.error.write(
                "delete: killed \(killed.count) process(es) left in the cgroups of container \(id) "
                    + "(a restore in flight or its CRIU worker): \(killed)\n"
            )
        }
        for mountPoint in MountPoints.under(runcRoot + "/" + id + "/") { try? MountPoints.unmount(mountPoint) }
        let images = node.layout.imageDirectory(containerdNamespace: namespace, containerID: id)
        killLazyPagesDaemons(serving: images)
        // A CRIU worker killed mid-restore leaves its cgroup yard mounted there.
        for mountPoint in MountPoints.under(images + "/") { try? MountPoints.unmount(mountPoint) }
        try? FileManager.default.removeItem(atPath: images)
        // A shim killed while it moved a restore's images into their kept-parent folder (decision 0077).
        try? FileManager.default.removeItem(atPath: images + CRIUCheckpoints.movingSuffix)
    }

    /// SIGKILLs every `criu lazy-pages` process whose command line names `images`.
    static func killLazyPagesDaemons(serving images: String) {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in entries.compactMap({ Int32($0) }) {
            guard let bytes = try? Files.read(FilePath("/proc/\(pid)/cmdline")) else { continue }
            let args = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if args.contains("lazy-pages"), args.contains(images) { kill(pid, SIGKILL) }
        }
    }

    /// Kills what a shim killed in the middle of a restore left running in the container's cgroups
    /// (``ContainerCgroupProcesses/killAll(id:runcRoot:)``): the CRIU worker and the tasks it
    /// restored so far. Those were the shim's children (`rst_sibling`) and belong to no one now;
    /// runc's state still names the init they were to replace, so `runc delete --force` would take
    /// them for a stopped container's and leave them running, and the worker would go on writing
    /// into the image folder while it is removed.
    /// - Returns: the pids signalled.
    @discardableResult
    static func killRestoreLeftovers(id: String, runcRoot: String) -> [Int32] {
        ContainerCgroupProcesses.killAll(id: id, runcRoot: runcRoot)
    }
}
