// Checkpoint and restore of runc containers, the path the shim uses (docs/decisions/
// 0003-restore-without-runc.md). Checkpoint: CRIU dumps the container's init tree with runc's own
// choices (rootfs as root, the pod netns external, bind and cgroup mounts external, cgroups
// managed) plus zeropod's (tcp_close, skip in-flight, no network lock). Restore: CRIU restores
// directly, without a runc process; then runc's state.json is pointed at the new init so runc
// keeps working on the container.

import FoundationEssentials
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A container that runc manages: its id and runc's state root (`runc --root`, default /run/runc).
public struct RuncContainer: Sendable, Equatable {
    /// The container id.
    public var id: String
    /// runc's state root.
    public var runcRoot: FilePath

    /// Names a container.
    public init(id: String, runcRoot: FilePath = "/run/runc") {
        self.id = id
        self.runcRoot = runcRoot
    }

    /// runc's state directory for the container.
    public var stateDir: FilePath { runcRoot.appending(id) }
}

/// What a container checkpoint records next to CRIU's images (`zeropod-checkpoint.json`), so a
/// restore needs nothing but the image directory, runc's state and the caller's descriptors.
public struct ContainerCheckpointManifest: Codable, Sendable, Equatable {
    /// Format version.
    public var version = 1
    /// The container id.
    public var containerID: String
    /// The init pid at dump time.
    public var initPID: Int32
    /// What fds 0, 1, 2 of the init pointed to ("pipe:[123]", "/dev/null").
    public var stdio: [String]
    /// External mounts: mount point in the container → host source to bind on restore.
    public var externalMounts: [String: String]
    /// The inherit_fd key of the external network namespace, when it was external.
    public var networkNamespaceKey: String?
    /// The network namespace path runc was configured with.
    public var networkNamespacePath: String?
    /// The pid namespace path runc was configured with (shared pid namespace), external as
    /// `extRootPidNS`.
    public var pidNamespacePath: String? = nil
    /// Whether the dump froze the tree with the cgroup freezer.
    public var usedFreezer: Bool
    /// tmpfs mounts copied in-process at dump time (zeropod-tmpfs.pb), by mount point: CRIU
    /// skipped them (external) and the restore mounts a fresh tmpfs with the same options and
    /// the copied files in their place.
    public var copiedTmpfs: [String: TmpfsMountOptions]? = nil
}

/// The options of a tmpfs mount that is copied instead of archived by CRIU.
public struct TmpfsMountOptions: Codable, Sendable, Equatable {
    /// Per-mount options from mountinfo, e.g. "ro,nosuid,nodev,noexec,relatime".
    public var mountOptions: String
    /// Superblock options from mountinfo, e.g. "rw,size=65536k,mode=755".
    public var superOptions: String
}

/// Options of a container checkpoint.
public struct ContainerCheckpointOptions: Sendable {
    /// Freeze with the container's freezer cgroup instead of stopping tasks one by one with
    /// ptrace. Safer against fork storms in many-process containers; costs ~100 ms on cgroup v1
    /// (CRIU polls the freezer in 100 ms steps). Off by default (see the decision record).
    public var freezeWithCgroup = false
    /// How CRIU treats the container's cgroups.
    public var cgroupMode: CRIUCgroupMode = .soft
    /// Give CRIU a yard of links to the host's mounted cgroup hierarchies (``CgroupYard``,
    /// decision 0072) instead of letting it mount each; CRIU mounts its own when a hierarchy is not
    /// mounted here either way.
    public var cgroupYard = true
    /// Copy small tmpfs mounts in-process instead of letting CRIU archive them (CRIU runs
    /// `tar --gzip` for each tmpfs on dump and again on restore). The copy is taken at post-dump,
    /// while CRIU holds the tasks frozen; if a tree turns out not copyable (sockets, fifos, hard
    /// links, more than 1 MiB), the dump is redone with CRIU archiving every tmpfs.
    public var copySmallTmpfs = true
    /// CRIU dump options; root, external, mounts, cgroups and freezer are filled in from runc's state.
    public var criu = DumpOptions()

    /// zeropod's defaults.
    public init() {}
}

/// Options of a container restore.
public struct ContainerRestoreOptions: Sendable {
    /// The container-side descriptors for fds 0, 1, 2 (the pipe ends the caller owns), used for
    /// each stdio slot that was a pipe at dump time. A slot that was a pipe needs a descriptor;
    /// slots sharing one pipe share the first descriptor given.
    public var stdio: [SharedDescriptor?] = [nil, nil, nil]
    /// How CRIU treats the container's cgroups.
    public var cgroupMode: CRIUCgroupMode = .soft
    /// Give CRIU a yard of links to the host's mounted cgroup hierarchies (``CgroupYard``,
    /// decision 0072) instead of letting it mount each. Off by default: unlike a dump, a restore
    /// measured no faster with it (busybox, prepared worker: 15.3-15.7 ms against 13.9-14.4).
    public var cgroupYard = false
    /// The container's init has a terminal whose master the caller held (runc's console): CRIU
    /// makes a new pty and hands its master over (`orphan_pts_master`); the result carries it.
    public var terminal = false
    /// CRIU restore options; root, inherited files, mounts and cgroups are filled in.
    public var criu = RestoreOptions()
    /// The images were made from another container, on another node (offline migration, decision
    /// 0057): the host side of everything the manifest names comes from this container's runc
    /// state instead (bind mount sources by mount point, cgroup mounts and cgroup roots from its
    /// cgroup paths, the network and pid namespaces from its configured paths), and established
    /// TCP connections come back closed (their addresses were the other pod's).
    public var migrated = false
    /// Start the CRIU worker in a mount namespace of its own that holds only the mounts the
    /// restore needs (decision 0067). CRIU's restore copies, walks and detaches the mount
    /// namespace it runs in, and the host's holds every pod's mounts: with it, a restore among
    /// many pods costs what a lone one does. When that namespace cannot be made, the worker
    /// starts in the caller's and ``PreparedContainerRestore/workerMountNamespace`` says why.
    public var workerMountNamespace = true

    /// zeropod's defaults.
    public init() {}
}

/// The outcome of a container checkpoint.
public struct ContainerCheckpointResult: Sendable {
    /// CRIU's timings.
    public var dump: DumpResult
    /// What was recorded next to the images.
    public var manifest: ContainerCheckpointManifest
    /// From the call to the end of the dump.
    public var total: Duration
}

/// The outcome of a container restore.
public struct ContainerRestoreResult: Sendable {
    /// The new init pid (a child of the caller: reap it).
    public var pid: Int32
    /// CRIU's timings.
    public var restore: RestoreResult
    /// From `restore()` to runc's state being rewritten (excludes `prepare`).
    public var total: Duration
    /// The time spent preparing (worker spawn, descriptors, rootfs bind mount).
    public var prepare: Duration
    /// The time spent rewriting runc's state.json after CRIU answered.
    public var stateUpdate: Duration
    /// The master of the restored terminal (with ``ContainerRestoreOptions/terminal``): the
    /// caller's to keep, copy from and resize.
    public var terminalMaster: SharedDescriptor? = nil
    /// The mount namespace the CRIU worker ran in (decision 0067).
    public var workerMountNamespace: WorkerMountNamespace = .caller
    /// Processes of the restored tree that were not in runc's cgroup of a controller and were
    /// moved there (see ``PreparedContainerRestore/run(hooks:)``), as `pid controller`; normally empty.
    public var cgroupCorrections: [String] = []
}

/// An error of a container checkpoint or restore: CRIU's, runc state's, or the caller's input.
public enum ContainerCheckpointError: Error, Sendable, CustomStringConvertible {
    /// CRIU failed; the error carries its errno, message and log tail.
    case criu(CRIUError)
    /// runc's state could not be read or rewritten.
    case runcState(RuncStateError)
    /// The container is not in a state that allows the operation (e.g. not running).
    case invalidState(container: String, reason: String)
    /// The caller's input is incomplete (e.g. a stdio pipe without a descriptor).
    case invalidArgument(String)
    /// A system call on the way failed (mount, open).
    case system(SystemError)

    /// A one-paragraph description.
    public var description: String {
        switch self {
        case .criu(let e): return e.description
        case .runcState(let e): return e.description
        case .invalidState(let c, let r): return "container \(c): \(r)"
        case .invalidArgument(let r): return "invalid argument: \(r)"
        case .system(let e): return e.description
        }
    }
}

/// The tmpfs copies a post-dump hook takes (the hook runs on the calling thread, inside `dump`).
final class TmpfsCopies {
    var snapshots: [TmpfsSnapshot] = []
}

/// The pty master an `orphan-pts-master` hook received (the hook runs on the calling thread,
/// inside `restore`).
final class TerminalHandOver {
    var master: SharedDescriptor?
}

/// The restored init's identity, read at CRIU's `post-restore` (a notification of the one
/// request, on the thread that runs it).
final class RestoredInitWitness {
    var identity: RuncState.ProcessIdentity?
}

/// Checkpoints runc containers with CRIU and restores them without runc.
public struct ContainerCheckpointer: Sendable {
    /// The CRIU client.
    public var checkpointer: Checkpointer
    /// File name of the manifest inside the image directory.
    public static let manifestName = "zeropod-checkpoint.json"
    /// The cgroup yard's folder in the images folder while CRIU dumps or restores (``CgroupYard``,
    /// decision 0072): links only, removed when CRIU is done.
    public static let cgroupYardName = ".zeropod-cgroup-yard"

    /// A cgroup yard for a CRIU request whose options manage cgroups (`mode` other than `ignore`),
    /// in `imagesDir`; nil lets CRIU mount its own.
    static func cgroupYard(in imagesDir: FilePath, mode: CRIUCgroupMode?) -> FilePath? {
        guard let mode, mode != .ignore else { return nil }
        return CgroupYard.make(at: imagesDir.appending(cgroupYardName), forProcess: getpid())
    }

    /// Creates a container checkpointer.
    public init(checkpointer: Checkpointer = Checkpointer()) {
        self.checkpointer = checkpointer
    }

    // MARK: checkpoint

    /// Dumps a running runc container into `imagesDir`; the container's processes are gone
    /// afterwards (runc then reports it stopped) unless `options.criu.leaveRunning`.
    ///
    /// - Throws: `ContainerCheckpointError`: `.invalidState` when runc's init is not running,
    ///   `.criu` when CRIU fails (the container keeps running then).
    /// - Parameter worker: a worker from `Checkpointer.startWorker()` started ahead of time
    ///   (consumed); nil starts one.
    public func checkpoint(
        _ container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerCheckpointOptions = ContainerCheckpointOptions(),
        hooks: CRIUHooks = CRIUHooks(),
        worker: CRIUConnection? = nil
    )
        throws(ContainerCheckpointError) -> ContainerCheckpointResult
    {
        let start = ContinuousClock.now
        let (pid, plannedOptions, plannedManifest) = try dumpPlan(container, options: options)
        var manifest = plannedManifest
        var o = plannedOptions
        let yard = options.cgroupYard ? Self.cgroupYard(in: imagesDir, mode: o.manageCgroups) : nil
        defer { if let yard { CgroupYard.remove(yard) } }
        o.cgroupYard = yard?.string
        // A tmpfs bound in from the host (kubelet's secret, projected and downward API volumes) is
        // an external mount: it is bound again from the host on restore and never copied.
        let candidates =
            options.copySmallTmpfs
            ? Self.copyableTmpfsMounts(of: pid, excluding: Set(manifest.externalMounts.keys)) : [:]
        let dump: DumpResult
        let copies = TmpfsCopies()
        do {
            dump = try dumpOnce(
                pid: pid,
                imagesDir: imagesDir,
                options: o,
                manifest: &manifest,
                tmpfs: candidates,
                copies: copies,
                hooks: hooks,
                worker: worker
            )
        } catch let error where error.code == .hookFailed && error.message.contains(Self.tmpfsNotCopyableMarker) {
            // A tmpfs changed into something we do not copy while we looked: CRIU aborted and
            // resumed the tasks; dump again with CRIU archiving every tmpfs.
            do {
                dump = try dumpOnce(
                    pid: pid,
                    imagesDir: imagesDir,
                    options: o,
                    manifest: &manifest,
                    tmpfs: [:],
                    copies: copies,
                    hooks: hooks,
                    worker: nil
                )
            } catch { throw .criu(error) }
        } catch { throw .criu(error) }
        try Self.writeCheckpointFiles(imagesDir: imagesDir, manifest: manifest, copies: copies.snapshots)
        return ContainerCheckpointResult(dump: dump, manifest: manifest, total: .now - start)
    }

    /// Writes the tmpfs copies (if any) and the manifest next to CRIU's images.
    private static func writeCheckpointFiles(
        imagesDir: FilePath,
        manifest: ContainerCheckpointManifest,
        copies: [TmpfsSnapshot]
    ) throws(ContainerCheckpointError) {
        if !copies.isEmpty {
            do {
                try Files.write(
                    imagesDir.appending(Self.tmpfsCopiesName),
                    TmpfsSnapshots(mounts: copies).encoded(),
                    mode: 0o600
                )
            } catch {
                throw .invalidArgument("cannot write \(imagesDir.appending(Self.tmpfsCopiesName)): \(error)")
            }
        }
        do {
            let data = try JSONEncoder().encode(manifest)
            try Files.write(imagesDir.appending(Self.manifestName), data, mode: 0o600)
        } catch {
            throw .invalidArgument("cannot write \(imagesDir.appending(Self.manifestName)): \(error)")
        }
    }

    /// Copies the memory of a running runc container into `imagesDir` while it keeps running
    /// (CRIU SINGLE_PRE_DUMP with `track_mem`; CRIU freezes the tasks only while it collects their
    /// pages). A later `checkpoint` with `options.criu.parentImages` set to this directory
    /// (relative to its own image directory, e.g. `"pre-dump"` for a subdirectory) and
    /// `options.criu.trackMemory` writes only the pages dirtied since; a restore of that
    /// checkpoint reads both directories, so neither may be removed before it.
    ///
    /// The CRIU options are the checkpoint's (root, external namespaces and mounts, cgroups).
    /// Without soft-dirty, a checkpointer whose pre-dumps track writes hands the tasks' write
    /// tracking to `hooks` (``Checkpointer/preDump(pid:imagesDir:options:hooks:)``, decision 0078).
    /// - Throws: `ContainerCheckpointError`: `.criu` with `.notSupported` where the kernel has no
    ///   dirty-memory tracking (checked once per process, CRIU is not asked to pre-dump then),
    ///   `.invalidState` when runc's init is not running, `.criu` when CRIU fails (the container
    ///   keeps running).
    public func preDump(
        _ container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerCheckpointOptions = ContainerCheckpointOptions(),
        hooks: CRIUHooks = CRIUHooks()
    )
        throws(ContainerCheckpointError) -> DumpResult
    {
        let (pid, plan, manifest) = try dumpPlan(container, options: options)
        var o = plan
        o.externalMounts = manifest.externalMounts.keys.sorted().map { CRIUKeyValue(key: $0, value: $0) }
        o.logFile = "pre-dump.log"
        do {
            return try checkpointer.preDump(pid: pid, imagesDir: imagesDir, options: o, hooks: hooks)
        } catch {
            throw .criu(error)
        }
    }

    /// Reads runc's state and turns it into the dump options and manifest of a checkpoint or
    /// pre-dump: rootfs as root, the network and pid namespaces external, host bind mounts and
    /// cgroup mounts external, cgroups managed, and the freezer if asked for.
    private func dumpPlan(
        _ container: RuncContainer,
        options: ContainerCheckpointOptions
    )
        throws(ContainerCheckpointError) -> (pid: Int32, options: DumpOptions, manifest: ContainerCheckpointManifest)
    {
        let state: RuncState
        do { state = try RuncState(runcRoot: container.runcRoot, id: container.id) } catch { throw .runcState(error) }
        let pid = state.initPID
        guard isProcessRunning(pid, startedAt: state.initStart) else {
            throw .invalidState(container: container.id, reason: "init \(pid) is not running (runc state is stale)")
        }
        var o = options.criu
        o.root = state.rootfs
        o.manageCgroups = options.cgroupMode
        var manifest = ContainerCheckpointManifest(
            containerID: container.id,
            initPID: pid,
            stdio: stdioLinks(pid),
            externalMounts: [:],
            usedFreezer: false
        )
        let ns = state.namespaces
        if let net = ns["NEWNET"], !net.isEmpty {
            do {
                o.external.append(try NetworkNamespace.externalEntry(for: FilePath(net), key: "extRootNetNS"))
            } catch { throw .system(error) }
            manifest.networkNamespaceKey = "extRootNetNS"
            manifest.networkNamespacePath = net
        }
        if let pidns = ns["NEWPID"], !pidns.isEmpty {
            do {
                o.external.append("pid[\(try Files.inode(of: FilePath(pidns)))]:extRootPidNS")
            } catch { throw .system(error) }
            manifest.pidNamespacePath = pidns
        }
        // Bind mounts from the host are external: CRIU records only their mount point.
        for m in state.mounts where m.isBind {
            manifest.externalMounts[m.destination] = m.source
        }
        // cgroup v1/v2 filesystems runc bind-mounts from the host's hierarchies: external too,
        // restored from the host mount of the same hierarchy.
        let host = (try? MountInfo.read()) ?? []
        for m in (try? MountInfo.read(pid: pid)) ?? [] where m.fsType == "cgroup" || m.fsType == "cgroup2" {
            guard let h = host.first(where: { $0.fsType == m.fsType && $0.superOptions == m.superOptions }) else {
                continue
            }
            let rel = m.root.hasPrefix(h.root) ? String(m.root.dropFirst(h.root.count)) : m.root
            let inside = m.mountPoint.hasPrefix("/") ? m.mountPoint : "/" + m.mountPoint
            manifest.externalMounts[inside] = h.mountPoint + (rel.hasPrefix("/") || rel.isEmpty ? rel : "/" + rel)
        }
        if options.freezeWithCgroup, let freezer = state.cgroupPaths["freezer"] ?? state.cgroupPaths[""] {
            o.freezeCgroup = freezer
            manifest.usedFreezer = true
        }
        return (pid, o, manifest)
    }

    static let tmpfsNotCopyableMarker = "tmpfs not copyable"
    /// File name of the tmpfs copies inside the image directory.
    public static let tmpfsCopiesName = "zeropod-tmpfs.pb"

    private func dumpOnce(
        pid: Int32,
        imagesDir: FilePath,
        options: DumpOptions,
        manifest: inout ContainerCheckpointManifest,
        tmpfs: [String: TmpfsMountOptions],
        copies: TmpfsCopies,
        hooks: CRIUHooks,
        worker: CRIUConnection?
    ) throws(CRIUError) -> DumpResult {
        var o = options
        o.externalMounts = (Array(manifest.externalMounts.keys) + tmpfs.keys).sorted().map {
            CRIUKeyValue(key: $0, value: $0)
        }
        manifest.copiedTmpfs = tmpfs.isEmpty ? nil : tmpfs
        copies.snapshots = []
        var h = hooks
        if !tmpfs.isEmpty {
            let callerHook = hooks["post-dump"]
            h["post-dump"] = { note in
                try callerHook?(note)
                // The tasks are frozen now: the copy is consistent with the dump.
                do {
                    copies.snapshots = try tmpfs.keys.sorted().map {
                        try TmpfsSnapshot.capture(mountPoint: $0, root: "/proc/\(pid)/root\($0)")
                    }
                } catch {
                    throw RuncStateError(path: "/proc/\(pid)/root", reason: "\(Self.tmpfsNotCopyableMarker): \(error)")
                }
            }
        }
        if options.lazyPages {
            // A lazy dump (live migration) answers only after its page server served every page,
            // but the images without the pages are complete when the page server is ready
            // (`status-ready`, after `post-dump`): the manifest and tmpfs copies must be there
            // before the caller hands the images on.
            let readyManifest = manifest
            let callerHook = hooks["status-ready"]
            h["status-ready"] = { note in
                try Self.writeCheckpointFiles(
                    imagesDir: imagesDir,
                    manifest: readyManifest,
                    copies: copies.snapshots
                )
                try callerHook?(note)
            }
        }
        return try checkpointer.dump(pid: pid, imagesDir: imagesDir, options: o, hooks: h, worker: worker)
    }

    /// tmpfs mounts of the container that can be copied in-process: mounted at their root, the only
    /// mount of their superblock at its root (other mounts of it may only bind something inside it,
    /// like runc's masked paths, which bind the container's `/dev/null` over `/proc/keys` etc.:
    /// CRIU binds those from the restored mount), not one of `external` (bind mounts from the host,
    /// such as a Kubernetes secret: their content must never reach an image), and copyable right now.
    static func copyableTmpfsMounts(of pid: Int32, excluding external: Set<String> = []) -> [String: TmpfsMountOptions]
    {
        let mounts = (try? MountInfo.read(pid: pid)) ?? []
        var rootMounts: [String: Int] = [:]
        for m in mounts where m.root == "/" { rootMounts[m.device, default: 0] += 1 }
        var out: [String: TmpfsMountOptions] = [:]
        for m in mounts
        where m.fsType == "tmpfs" && m.root == "/" && m.mountPoint != "/" && rootMounts[m.device] == 1
            && !external.contains(m.mountPoint)
        {
            guard
                (try? TmpfsSnapshot.capture(mountPoint: m.mountPoint, root: "/proc/\(pid)/root\(m.mountPoint)")) != nil
            else { continue }
            out[m.mountPoint] = TmpfsMountOptions(mountOptions: m.mountOptions, superOptions: m.superOptions)
        }
        return out
    }

    // MARK: restore

    /// Restores a container dumped by `checkpoint` and points runc's state at the new init:
    /// `prepareRestore` followed by `PreparedContainerRestore.run`.
    /// - Throws: `ContainerCheckpointError`.
    public func restore(
        _ container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerRestoreOptions = ContainerRestoreOptions(),
        hooks: CRIUHooks = CRIUHooks()
    ) throws(ContainerCheckpointError) -> ContainerRestoreResult {
        let prepared = try prepareRestore(container, imagesDir: imagesDir, options: options)
        return try prepared.run(hooks: hooks)
    }

    /// Does everything of a restore that does not need the images to be used yet: reads the
    /// manifest and runc's state, opens the network namespace, bind-mounts the rootfs where CRIU
    /// wants it, and starts the CRIU worker with the inherited descriptors. A shim can do this
    /// while the container is scaled down and keep only `run` on the connection's critical path.
    /// - Throws: `ContainerCheckpointError`.
    public func prepareRestore(
        _ container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerRestoreOptions = ContainerRestoreOptions()
    )
        throws(ContainerCheckpointError) -> PreparedContainerRestore
    {
        try PreparedContainerRestore(
            checkpointer: checkpointer,
            container: container,
            imagesDir: imagesDir,
            options: options
        )
    }
}

/// A restore made ready ahead of time (see `ContainerCheckpointer.prepareRestore`). Owns the CRIU
/// worker, the namespace descriptor and the rootfs bind mount; `run` uses them once, `cancel`
/// (or deinit) releases them.
public final class PreparedContainerRestore {
    private let checkpointer: Checkpointer
    /// The container being restored.
    public let container: RuncContainer
    private let imagesDir: FilePath
    private var state: RuncState
    private var options = RestoreOptions()
    private var worker: CRIUConnection?
    private var netns: SharedDescriptor?
    private var pidns: SharedDescriptor?
    private var boundRoot: FilePath?
    private var stagedTmpfs: [FilePath] = []
    /// The owner-only folder (0700) under runc's state folder that holds the staged tmpfs copies
    /// and the rootfs bind mount while the restore waits: a tmpfs mounted there keeps the mode of
    /// the container's (often 1777), so without this folder another user could read the copy of
    /// the container's `/tmp` through runc's traversable state folders.
    private var stagingFolder: FilePath?
    /// The empty folder where the worker's mount namespace was assembled (in the staging folder).
    private var assemblyFolder: FilePath?
    /// The cgroup yard CRIU uses (links in the images folder, decision 0072).
    private var cgroupYard: FilePath?
    private var prepareDuration: Duration = .zero
    /// The mount namespace the prepared worker started in (decision 0067).
    public private(set) var workerMountNamespace: WorkerMountNamespace = .caller

    init(
        checkpointer: Checkpointer,
        container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerRestoreOptions
    )
        throws(ContainerCheckpointError)
    {
        let start = ContinuousClock.now
        self.checkpointer = checkpointer
        self.container = container
        self.imagesDir = imagesDir
        do { state = try RuncState(runcRoot: container.runcRoot, id: container.id) } catch { throw .runcState(error) }
        let manifestPath = imagesDir.appending(ContainerCheckpointer.manifestName)
        var manifest: ContainerCheckpointManifest
        do {
            manifest = try JSONDecoder().decode(
                ContainerCheckpointManifest.self,
                from: Data(try Files.read(manifestPath))
            )
        } catch {
            throw .invalidArgument("\(manifestPath) is missing or unreadable (\(error)): not a container checkpoint")
        }
        if isProcessRunning(state.initPID, startedAt: state.initStart) {
            throw .invalidState(container: container.id, reason: "init \(state.initPID) is still running")
        }
        if options.migrated { manifest = try Self.migrated(manifest, to: state, container: container.id) }
        var o = options.criu
        o.manageCgroups = options.cgroupMode
        cgroupYard = options.cgroupYard ? ContainerCheckpointer.cgroupYard(in: imagesDir, mode: o.manageCgroups) : nil
        o.cgroupYard = cgroupYard?.string
        if options.terminal { o.orphanPtsMaster = true }
        if options.migrated { o.tcpClose = true }
        o.externalMounts = manifest.externalMounts.keys.sorted().map {
            CRIUKeyValue(key: $0, value: manifest.externalMounts[$0]!)
        }
        var inherited: [InheritedFile] = []
        if let key = manifest.networkNamespaceKey, let path = manifest.networkNamespacePath {
            do {
                let fd = SharedDescriptor(try OwnedDescriptor.open(FilePath(path), O_RDONLY))
                netns = fd
                inherited.append(InheritedFile(key: key, descriptor: fd))
            } catch {
                throw .invalidArgument(
                    "network namespace \(path) of container \(container.id) cannot be opened: \(error)"
                )
            }
        }
        if let path = manifest.pidNamespacePath {
            do {
                let fd = SharedDescriptor(try OwnedDescriptor.open(FilePath(path), O_RDONLY))
                pidns = fd
                inherited.append(InheritedFile(key: "extRootPidNS", descriptor: fd))
            } catch {
                cancel()
                throw .invalidArgument("pid namespace \(path) of container \(container.id) cannot be opened: \(error)")
            }
        }
        // Namespaces the container joined by path (a pod's IPC and UTS): join them again, as runc does.
        for (type, name) in [("NEWIPC", "ipc"), ("NEWUTS", "uts")] {
            if let path = state.namespaces[type], !path.isEmpty {
                o.joinNamespaces.append(CRIUJoinNamespace(namespace: name, namespaceFile: path))
            }
        }
        // Each distinct pipe of fds 0-2 needs its own inherited descriptor (CRIU closes them).
        var seen: Set<String> = []
        for (slot, key) in manifest.stdio.enumerated() where key.hasPrefix("pipe:") && !seen.contains(key) {
            seen.insert(key)
            guard slot < options.stdio.count, let fd = options.stdio[slot] else {
                cancel()
                throw .invalidArgument(
                    "container \(container.id) had fd \(slot) on \(key): pass its pipe end in stdio[\(slot)]"
                )
            }
            inherited.append(InheritedFile(key: key, descriptor: fd))
        }
        o.inheritedFiles = inherited
        // tmpfs mounts copied at dump: mount fresh ones with the same options and files now;
        // CRIU binds them into place (ext_mnt mount point → staging directory).
        if let copied = manifest.copiedTmpfs {
            let copiesPath = imagesDir.appending(ContainerCheckpointer.tmpfsCopiesName)
            var snapshots: [String: TmpfsSnapshot] = [:]
            do {
                for m in try TmpfsSnapshots(decoding: try Files.read(copiesPath)).mounts { snapshots[m.mountPoint] = m }
            } catch {
                cancel()
                throw .invalidArgument("\(copiesPath) is missing or corrupt: \(error)")
            }
            let staging: FilePath
            do { staging = try makeStagingFolder() } catch {
                cancel()
                throw .system(error)
            }
            for (i, mountPoint) in copied.keys.sorted().enumerated() {
                guard let snapshot = snapshots[mountPoint] else {
                    cancel()
                    throw .invalidArgument("\(copiesPath) has no copy of \(mountPoint)")
                }
                let dir = staging.appending("tmpfs-\(i)")
                _ = mkdir(dir.string, 0o700)
                stagedTmpfs.append(dir)  // cancel() unmounts (if mounted) and removes it
                let (flags, data) = Self.tmpfsMountArguments(copied[mountPoint]!)
                do {
                    // Mount writable to fill it, then apply the recorded read-only flag.
                    try MountPoints.mount(
                        source: "tmpfs",
                        target: dir.string,
                        type: "tmpfs",
                        flags: flags & ~UInt(MS_RDONLY),
                        data: data
                    )
                    try snapshot.recreate(at: dir.string)
                    if flags & UInt(MS_RDONLY) != 0 {
                        try MountPoints.mount(
                            source: "tmpfs",
                            target: dir.string,
                            type: "tmpfs",
                            flags: flags | UInt(MS_REMOUNT),
                            data: data
                        )
                    }
                } catch {
                    cancel()
                    throw .system(error)
                }
                o.externalMounts.append(CRIUKeyValue(key: mountPoint, value: dir.string))
            }
        }
        // CRIU restores a mount namespace only onto a root that is a mount point (as runc does,
        // bind the rootfs at <state>/zeropod-restore/criu-root).
        let rootfs = state.rootfs
        if ((try? MountInfo.read()) ?? []).contains(where: { $0.mountPoint == rootfs }) {
            o.root = rootfs
        } else {
            do {
                let target = try makeStagingFolder().appending("criu-root")
                _ = mkdir(target.string, 0o700)
                boundRoot = target  // cancel() unmounts (if mounted) and removes it
                try MountPoints.mount(
                    source: rootfs,
                    target: target.string,
                    type: nil,
                    flags: UInt(MS_BIND | MS_REC),
                    data: nil
                )
                o.root = target.string
            } catch {
                cancel()
                throw .system(error)
            }
        }
        self.options = o
        var confinement: ConfinedMountNamespace?
        if options.workerMountNamespace, let work = o.workDir, work != imagesDir {
            // CRIU gets another work folder by descriptor, a folder of this namespace (see
            // Checkpointer.run): the worker stays here.
            workerMountNamespace = .callerAfterFailure("work folder \(work) is not the images folder")
        } else if options.workerMountNamespace {
            do {
                let folder = try makeStagingFolder().appending("worker-root")
                _ = mkdir(folder.string, 0o700)
                assemblyFolder = folder  // cancel() removes it
                confinement = Self.workerMounts(
                    options: o,
                    imagesDir: imagesDir,
                    criuPath: checkpointer.criuPath,
                    assemblyFolder: folder
                )
            } catch {
                cancel()
                throw .system(error)
            }
        }
        do {
            worker = try checkpointer.startWorker(inheriting: inherited, mountNamespace: confinement)
        } catch {
            cancel()
            throw .criu(error)
        }
        if confinement != nil { workerMountNamespace = worker?.mountNamespace ?? .caller }
        // A cgroup runc made may be gone by now (systemd removes a scope unit's cgroup once its
        // last process left, i.e. at the dump): make it again at the same path, as runc's restore
        // does (through systemd for its driver), so the worker and the restored tasks land there.
        Self.makeMissingCgroups(state.cgroupPaths)
        if let pid = worker?.workerPID {
            Self.joinCgroups(pid: pid, paths: state.cgroupPaths)
            // Migrated images name the other container's cgroups: the tree goes where the worker
            // now is, this container's (as runc's restore does with cg_root).
            if options.migrated,
                let text = try? Files.readText(FilePath("/proc/\(pid)/cgroup"))
            {
                self.options.cgroupRoots = Self.cgroupRoots(procCgroup: text)
            }
        }
        prepareDuration = .now - start
    }

    /// The mount namespace of a restore worker (decision 0067): the host's mounts that the
    /// restore reads (CRIU and its libraries, the system folders, the images and work folder,
    /// `/run` for CRIU's kernel-feature cache, the files of the namespaces it joins),
    /// `/proc`, `/sys` and `/dev` whole, and, with
    /// their propagation kept, the root CRIU restores onto and the source of every external mount.
    static func workerMounts(
        options o: RestoreOptions,
        imagesDir: FilePath,
        criuPath: FilePath,
        assemblyFolder: FilePath
    ) -> ConfinedMountNamespace {
        // CRIU's kernel-feature cache is /run/criu/criu.kdat, /run/criu a tmpfs of its own where
        // setup made one (decision 0012): both paths, since one that does not exist is left out
        // and CRIU must then make its folder in the host's /run, not in the root filesystem's
        // folder under it.
        var paths = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/tmp", "/run", "/run/criu"]
        paths.append(imagesDir.string)
        if let work = o.workDir { paths.append(work.string) }
        if let config = o.configFile { paths.append(config) }
        // Namespaces joined by path: a pod's IPC and UTS namespace files are often bind mounts
        // of their own (nsfs), like the network namespaces under /run/netns.
        for j in o.joinNamespaces { paths.append(j.namespaceFile) }
        paths.append(criuPath.string)
        // An installed CRIU finds its libraries at $ORIGIN/../lib (decision 0024).
        paths.append(criuPath.removingLastComponent().removingLastComponent().appending("lib").string)
        var bound: [ConfinedMountNamespace.Bound] = []
        if let root = o.root { bound.append(.init(root, recursive: true)) }
        for m in o.externalMounts { bound.append(.init(m.value)) }
        return ConfinedMountNamespace(paths: paths, bound: bound, assemblyFolder: assemblyFolder.string)
    }

    /// `manifest` (made for another container, maybe on another node) with this container's host
    /// side: every external mount's source from `state` (a bind mount of the config with that
    /// mount point, or for a cgroup filesystem mounted at `/sys/fs/cgroup[/<controllers>]` the
    /// container's folder of that hierarchy), and its network and pid namespace paths.
    /// - Throws: ``ContainerCheckpointError/invalidArgument(_:)`` naming a mount point this
    ///   container has no source for, or a namespace it does not join.
    static func migrated(
        _ manifest: ContainerCheckpointManifest,
        to state: RuncState,
        container: String
    ) throws(ContainerCheckpointError) -> ContainerCheckpointManifest {
        var out = manifest
        let binds = Dictionary(state.mounts.filter(\.isBind).map { ($0.destination, $0.source) }) { a, _ in a }
        let cgroups = state.cgroupPaths
        for (mountPoint, _) in manifest.externalMounts {
            if let source = binds[mountPoint] {
                out.externalMounts[mountPoint] = source
            } else if let folder = cgroupFolder(mountedAt: mountPoint, paths: cgroups) {
                out.externalMounts[mountPoint] = folder
            } else {
                throw .invalidArgument(
                    "the migrated images of container \(container) bind \(mountPoint) from the host, and this container's spec has no mount there"
                )
            }
        }
        let ns = state.namespaces
        if manifest.networkNamespaceKey != nil {
            guard let net = ns["NEWNET"], !net.isEmpty else {
                throw .invalidArgument(
                    "the migrated images of container \(container) join a network namespace, and this container's spec names none"
                )
            }
            out.networkNamespacePath = net
        }
        if manifest.pidNamespacePath != nil {
            guard let pidns = ns["NEWPID"], !pidns.isEmpty else {
                throw .invalidArgument(
                    "the migrated images of container \(container) join a pid namespace, and this container's spec names none"
                )
            }
            out.pidNamespacePath = pidns
        }
        return out
    }

    /// The container's cgroup folder for the hierarchy runc mounts at `mountPoint` inside it:
    /// `/sys/fs/cgroup` (v2: the `""` path), `/sys/fs/cgroup/<controllers>` (v1: the path of its
    /// first controller, `name=<x>` for a named hierarchy, `/sys/fs/cgroup/unified` the v2 one).
    static func cgroupFolder(mountedAt mountPoint: String, paths: [String: String]) -> String? {
        let base = "/sys/fs/cgroup"
        if mountPoint == base { return paths[""].flatMap { $0.isEmpty ? nil : $0 } }
        guard mountPoint.hasPrefix(base + "/") else { return nil }
        let name = String(mountPoint.dropFirst(base.count + 1))
        guard !name.isEmpty, !name.contains("/") else { return nil }
        let candidates =
            name == "unified"
            ? [""] : [name, "name=" + name] + name.split(separator: ",").map(String.init)
        for key in candidates { if let path = paths[key], !path.isEmpty { return path } }
        return nil
    }

    /// CRIU's cgroup roots for a task whose `/proc/<pid>/cgroup` is `procCgroup`: each v1
    /// controller at its path (`name=` hierarchies as named), the v2 hierarchy as the default.
    static func cgroupRoots(procCgroup: String) -> [CRIUCgroupRoot] {
        var roots: [CRIUCgroupRoot] = []
        for line in procCgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = String(parts[2])
            if parts[1].isEmpty {
                roots.append(CRIUCgroupRoot(controller: nil, path: path))
            } else {
                for controller in parts[1].split(separator: ",") {
                    roots.append(CRIUCgroupRoot(controller: String(controller), path: path))
                }
            }
        }
        return roots
    }

    /// Makes every cgroup folder of `paths` that does not exist (best effort; CRIU's soft mode makes
    /// missing ones too, but after the worker would have joined them).
    /// A new cpuset cgroup (v1) takes no process until it has CPUs and memory nodes, so each folder
    /// made there gets its parent's `cpuset.cpus` and `cpuset.mems`, as runc does.
    static func makeMissingCgroups(_ paths: [String: String]) {
        var done = Set<String>()
        for (controller, dir) in paths.sorted(by: { $0.key < $1.key }) where !dir.isEmpty && !done.contains(dir) {
            done.insert(dir)
            guard access(dir, F_OK) != 0 else { continue }
            let cpuset = controller.split(separator: ",").contains("cpuset")
            var prefix = ""
            for part in dir.split(separator: "/") {
                let parent = prefix
                prefix += "/" + part
                guard mkdir(prefix, 0o755) == 0, cpuset else { continue }
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let value = try? Files.read(FilePath(parent + "/" + file)) {
                        try? Files.write(FilePath(prefix + "/" + file), value)
                    }
                }
            }
        }
    }

    /// Moves every process of the tree rooted at `pid` that is not in runc's cgroup of a
    /// controller into it (writing its pid to that folder's `cgroup.procs`).
    /// - Returns: `pid controller` for each move.
    static func placeInCgroups(treeOf pid: Int32, paths: [String: String]) -> [String] {
        let mounts = (try? MountInfo.read()) ?? []
        var moved: [String] = []
        for member in processTree(pid) {
            guard let text = try? Files.readText(FilePath("/proc/\(member)/cgroup")) else { continue }
            let now = ProcessCgroups.folders(procCgroup: text, mounts: mounts)
            for (controller, want) in paths where !want.isEmpty {
                guard let have = now[controller], have != want else { continue }
                guard let fd = try? OwnedDescriptor.open(FilePath(want).appending("cgroup.procs"), O_WRONLY) else {
                    continue
                }
                if (try? fd.writeAll(Array("\(member)\n".utf8))) != nil { moved.append("\(member) \(controller)") }
            }
        }
        return moved
    }

    /// `pid` and its descendants (from `/proc/PID/task/*/children`).
    static func processTree(_ pid: Int32) -> [Int32] {
        var out: [Int32] = []
        var queue = [pid]
        while let next = queue.popLast() {
            out.append(next)
            for task in (try? Files.list(FilePath("/proc/\(next)/task"))) ?? [] {
                let text = (try? Files.readText(FilePath("/proc/\(next)/task/\(task)/children"))) ?? ""
                queue += text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int32($0) }
            }
        }
        return out
    }

    deinit { cancel() }

    /// The staging folder, created owner-only on first use (see ``stagingFolder``).
    private func makeStagingFolder() throws(SystemError) -> FilePath {
        if let stagingFolder { return stagingFolder }
        let folder = container.stateDir.appending(Self.stagingFolderName)
        try Files.makeOwnerOnlyDirectory(folder)
        stagingFolder = folder
        return folder
    }

    /// The name of the staging folder in runc's state folder of the container.
    public static let stagingFolderName = "zeropod-restore"

    /// Puts the restore worker into the container's cgroups (every controller runc recorded), as
    /// runc does before its own restores. Best effort: CRIU still moves the restored tasks into the
    /// dumped cgroups (`manage_cgroups`). Why: CRIU mounts each hierarchy into its cgroup yard, and
    /// on a hybrid host the first cgroup2 mount of a process sitting in the root v2 cgroup took
    /// 8-21 ms here (a process in a child cgroup: ~80 µs) — most of the time before `pre-restore`
    /// (decision 0003).
    static func joinCgroups(pid: Int32, paths: [String: String]) {
        let bytes = Array("\(pid)\n".utf8)
        for dir in Set(paths.values) where !dir.isEmpty {
            guard let fd = try? OwnedDescriptor.open(FilePath(dir).appending("cgroup.procs"), O_WRONLY) else {
                continue
            }
            try? fd.writeAll(bytes)
        }
    }

    /// The pid of the prepared CRIU worker, nil once it was used or cancelled.
    public var workerPID: Int32? { worker?.workerPID }

    /// Releases the worker, the descriptors and the bind mount without restoring.
    public func cancel() {
        worker?.close(grace: .zero)
        worker = nil
        netns?.close()
        netns = nil
        pidns?.close()
        pidns = nil
        if let boundRoot {
            try? MountPoints.unmount(boundRoot.string)
            _ = rmdir(boundRoot.string)
            self.boundRoot = nil
        }
        for dir in stagedTmpfs {
            try? MountPoints.unmount(dir.string)
            _ = rmdir(dir.string)
        }
        stagedTmpfs = []
        if let assemblyFolder {
            _ = rmdir(assemblyFolder.string)  // mounted only in the worker's namespace
            self.assemblyFolder = nil
        }
        if let stagingFolder {
            _ = rmdir(stagingFolder.string)  // empty now, unless something is still mounted there
            self.stagingFolder = nil
        }
        if let cgroupYard {
            CgroupYard.remove(cgroupYard)
            self.cgroupYard = nil
        }
    }

    /// mount(2) flags and data for a tmpfs like the one recorded.
    static func tmpfsMountArguments(_ t: TmpfsMountOptions) -> (UInt, String) {
        var flags: UInt = 0
        for o in t.mountOptions.split(separator: ",") {
            switch o {
            case "ro": flags |= UInt(MS_RDONLY)
            case "nosuid": flags |= UInt(MS_NOSUID)
            case "nodev": flags |= UInt(MS_NODEV)
            case "noexec": flags |= UInt(MS_NOEXEC)
            case "noatime": flags |= UInt(MS_NOATIME)
            case "nodiratime": flags |= UInt(MS_NODIRATIME)
            case "relatime": flags |= UInt(MS_RELATIME)
            case "strictatime": flags |= UInt(MS_STRICTATIME)
            default: break
            }
        }
        let data = t.superOptions.split(separator: ",").filter { $0 != "rw" && $0 != "ro" }.joined(separator: ",")
        return (flags, data)
    }

    /// Restores with the prepared worker, then rewrites runc's state.json for the new init.
    /// - Throws: `ContainerCheckpointError`; after a CRIU failure nothing of the container runs.
    public func run(hooks: CRIUHooks = CRIUHooks()) throws(ContainerCheckpointError) -> ContainerRestoreResult {
        let start = ContinuousClock.now
        guard let worker else {
            throw .invalidState(container: container.id, reason: "restore already run or cancelled")
        }
        self.worker = nil
        defer { cancel() }
        let r: RestoreResult
        let terminal = TerminalHandOver()
        var h = hooks
        if options.orphanPtsMaster {
            let callerHook = hooks["orphan-pts-master"]
            h["orphan-pts-master"] = { note in
                // Taken over before the connection closes what the hook leaves.
                if let fd = note.receivedFD?.take() { terminal.master = SharedDescriptor(fd) }
                try callerHook?(note)
            }
        }
        // At `post-restore` the tasks exist and are not resumed yet: the init's identity is read
        // there, since a caller's `post-resume` hook may let it serve (and exit) before CRIU returns.
        let seen = RestoredInitWitness()
        let callerPostRestore = h["post-restore"]
        h["post-restore"] = { note in
            if let pid = note.pid { seen.identity = try? RuncState.ProcessIdentity.read(pid) }
            try callerPostRestore?(note)
        }
        do {
            r = try checkpointer.restore(imagesDir: imagesDir, options: options, hooks: h, worker: worker)
        } catch {
            terminal.master?.close()
            throw .criu(error)
        }
        let criuDone = ContinuousClock.now
        // CRIU puts the tasks into the dumped cgroups; a task that is elsewhere (a cgroup that
        // could not be made, or a differently mounted hierarchy) is moved to runc's.
        let corrections = Self.placeInCgroups(treeOf: r.pid, paths: state.cgroupPaths)
        do {
            try state.adopt(initPID: r.pid, seen: seen.identity)
            try state.write()
        } catch {
            terminal.master?.close()
            throw .runcState(error)
        }
        let end = ContinuousClock.now
        return ContainerRestoreResult(
            pid: r.pid,
            restore: r,
            total: end - start,
            prepare: prepareDuration,
            stateUpdate: end - criuDone,
            terminalMaster: terminal.master,
            workerMountNamespace: workerMountNamespace,
            cgroupCorrections: corrections
        )
    }
}
