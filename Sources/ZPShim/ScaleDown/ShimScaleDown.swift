import Logging
import NIOPosix
import Synchronization
import SystemPackage
import ZPAPI
import ZPCheckpoint
import ZPCore
import ZPScaleDown
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

// The shim's side of a container's scale-down (decision 0018): the ZPScaleDown driver runs it;
// these adapters give it runc and the ShimContainer (container control), ZPCheckpoint (checkpoints
// and prepared restores), the status board and the wake group member.

/// A container's scale-down as the shim wires it: the driver, the container it controls (known
/// once `runc create` succeeded) and the pod network it belongs to.
final class ScaleDownWiring: Sendable {
    /// The container's driver.
    let driver: ScaleDownDriver
    /// The ShimContainer the adapters act on.
    let container: ContainerHandle
    /// The pod's network namespace (its redirector is shared by the pod's containers).
    let netnsPath: String
    /// The container's redirect on the pod's redirector, set up when first needed (decision 0060).
    let redirect: DeferredPodRedirect
    /// The container's offline migration (`zeropod.ctrox.dev/migrate` names it; decision 0057).
    let migration: ContainerMigration?

    /// The container's kept connections and handover listeners (decisions 0045, 0046); nil until
    /// the pod's redirector is ready.
    var connections: ContainerConnections? { redirect.connections }

    init(
        driver: ScaleDownDriver,
        container: ContainerHandle,
        netnsPath: String,
        redirect: DeferredPodRedirect,
        migration: ContainerMigration? = nil
    ) {
        self.driver = driver
        self.container = container
        self.netnsPath = netnsPath
        self.redirect = redirect
        self.migration = migration
    }
}

/// The ShimContainer the adapters act on: set right after create, dropped after Delete (later
/// effects then find no container and do nothing).
final class ContainerHandle: Sendable {
    private let container = Mutex<ShimContainer?>(nil)

    /// Connects the adapters to the container.
    func attach(_ shimContainer: ShimContainer) { container.withLock { $0 = shimContainer } }
    /// Disconnects them.
    func detach() { container.withLock { $0 = nil } }
    /// The container, while attached.
    var current: ShimContainer? { container.withLock { $0 } }
}

/// runc and the ShimContainer as the driver's ``ScaleDownContainerControl``.
struct RuncContainerControl: ScaleDownContainerControl {
    let id: String
    let bundle: String
    let runc: RuncDriver
    let pids: PidIndex
    let container: ContainerHandle
    /// The container's redirect, whose connections are closed before a cold start, so that the
    /// new process can bind its ports (decision 0046).
    let redirect: DeferredPodRedirect

    /// The container's handover listeners; nil until the pod's redirector is ready (decision 0060).
    var connections: ContainerConnections? { redirect.connections }

    func signal(_ signal: Int32, allProcesses: Bool) async throws {
        try await runc.kill(id: id, bundle: bundle, signal: UInt32(signal), all: allProcesses)
    }

    func coldStart() async throws -> Int32 {
        guard let container = container.current else { throw ScaleDownError("container \(id) was deleted") }
        connections?.coldStartBegins()
        try? await runc.delete(id: id, bundle: bundle, force: true)
        let pid = try await container.recreateInit()
        try await runc.start(id: id, bundle: bundle)
        return pid
    }

    func adoptRestoredInit(pid: Int32) async {
        await container.current?.adoptInit(pid: pid)
    }

    func watchExits(of pid: Int32) -> Int32? {
        guard let container = container.current else { return nil }
        return pids.register(pid, to: container).map { Int32(bitPattern: $0.code) }
    }

    func reportExit(status: Int32) async {
        await container.current?.recordInitExitFromDriver(
            status: ExitStatus(code: UInt32(bitPattern: status), exitedAt: SystemClock.realtimeNanoseconds())
        )
    }

    func listeningPorts(ofTreeAt pid: Int32) -> [UInt16] {
        PortDiscovery.listeningPorts(ofTreeAt: pid)
    }

    func portsServedByOthers(_ ports: [UInt16], treeAt pid: Int32) -> [UInt16] {
        PortDiscovery.portsServedByOthers(ports, treeAt: pid)
    }

    func pendingConnections(on ports: [UInt16], treeAt pid: Int32) -> PendingConnections {
        PortDiscovery.pendingConnections(on: ports, treeAt: pid)
    }
}

/// ZPCheckpoint as the driver's ``ScaleDownCheckpoints``: CRIU's dump, pre-dump and restore of a
/// runc container (decision 0003), its images under `<state-dir>/i/<namespace>/<id>`, and restores
/// prepared ahead with a lazy-pages daemon when lazy restore applies (decision 0009).
struct CRIUCheckpoints: ScaleDownCheckpoints {
    /// The pre-dump image folder, inside the checkpoint's so that one removal takes both.
    static let preDumpDirectoryName = "pre-dump"
    /// The images a tracked restore came from, kept inside the checkpoint's folder while the
    /// container runs: the next checkpoint's parent (decision 0077). Each generation keeps its own
    /// parent inside it under the same name, so CRIU's relative `parent` links stay right.
    static let parentDirectoryName = "prev"
    /// How many parents a checkpoint may have (decision 0077): a deeper chain is replaced by a full
    /// dump, which bounds what a restore reads through and what the node keeps on disk.
    static let maximumParentChain = 3
    /// The images folder's name plus this, for the moment the kept parent is moved into place.
    static let movingSuffix = ".moving"

    /// The hold on the last full restore's write tracking (shared by every copy of this value).
    let writeTracking = WriteTracking()
    /// The hold on the last pre-dump's write tracking, without soft-dirty (decision 0078): the
    /// checkpoint on top of that pre-dump writes only the pages written since.
    let preDumpTracking = WriteTracking()

    /// The shim's one checkpointer (built once per shim, for the node's CRIU).
    let checkpointer: ContainerCheckpointer
    let target: RuncContainer
    /// `<state-dir>/i/<containerd namespace>/<id>`.
    let imagesDirectory: String
    /// `<state-dir>/i/<containerd namespace>`, removed when it empties.
    let namespaceImagesDirectory: String
    let lazyRestore: LazyRestoreMode
    /// CRIU's log level for every dump and restore (node setting `criu-log-level`).
    let logLevel: Int32
    let pids: PidIndex
    let container: ContainerHandle
    /// The container's redirect on the pod's redirector (decision 0060).
    let redirect: DeferredPodRedirect

    /// The container's kept connections and handover listeners (decisions 0045, 0046); nil
    /// until the pod's redirector is ready, or when it could not be set up (a checkpoint comes
    /// only after the activator, which waits for it).
    var connections: ContainerConnections? { redirect.connections }

    /// Whether dumps keep established connections (`tcp_established`) instead of closing them.
    var keepsConnections: Bool { connections?.settings.keepConnections ?? false }
    /// The init has a terminal (decision 0043): dumps allow the pty whose master the shim holds
    /// (`orphan_pts_master`), restores hand the new master to the container.
    var terminal = false

    func checkpoint(incremental: Bool) async throws -> ScaleDownReport {
        // The processes end with this dump (or run on untracked after a failure): the hold ends
        // after it either way.
        defer { writeTracking.release() }
        if !incremental, let depth = prepareTrackedParent() {
            do {
                var report = try await dump(parent: true)
                report.details["parent"] = "restore (\(depth) deep)"
                return report
            } catch {
                // The processes run on (CRIU resumes them when a dump fails): dump them fully.
                writeTracking.release()
                removeImages()
                var report = try await dump(parent: false)
                report.details["incremental"] = "failed (\(error)), dumped fully"
                return report
            }
        }
        writeTracking.release()
        guard incremental else {
            removeImages()
            return try await dump(parent: false)
        }
        // On the pre-dump: dirty is soft-dirty, or written since the pre-dump while its tracking is
        // held (decision 0078); neither (an untracked pre-dump) makes it a plain full dump.
        defer { preDumpTracking.release() }
        let softDirty = (try? checkpointer.checkpointer.supportsMemoryTracking()) == true
        let tracked = !softDirty && preDumpTracking.holdsRunningTree
        guard softDirty || tracked else {
            removeImages()
            var report = try await dump(parent: false)
            report.details["pre-dump"] = "not tracked, dumped fully"
            return report
        }
        removeImages(keepingPreDump: true)
        return try await dump(parent: false, onPreDump: true, tracked: tracked)
    }

    /// Readies the next dump to be incremental on the images of a tracked restore (decision
    /// 0077) when it can be: a tracked tree still runs and its images are kept as the parent —
    /// moved there now if the restore's clean-up has not done it yet (a side effect).
    /// - Returns: how many generations the parent chain has; nil when the dump must be full.
    private func prepareTrackedParent() -> Int? {
        guard writeTracking.holdsRunningTree else { return nil }
        if FileManager.default.fileExists(atPath: imagesDirectory + "/inventory.img"), !keepImagesAsParent() {
            return nil
        }
        var depth = 0
        var folder = imagesDirectory
        while FileManager.default.fileExists(atPath: folder + "/" + Self.parentDirectoryName + "/inventory.img") {
            depth += 1
            folder += "/" + Self.parentDirectoryName
        }
        guard (1...Self.maximumParentChain).contains(depth) else { return nil }
        // Images the next restore would take lazily are written in full: a lazy restore is not
        // tracked (a container that grew past `lazy-restore = auto`'s threshold).
        guard !lazyRestore.restoresLazily(pageBytes: Self.chainPageBytes(imagesDirectory), userfaultfdUsable: true)
        else { return nil }
        return depth
    }

    /// Whether a full restore of the images now in the folder is tracked (decision 0077): the
    /// checkpointer tracks writes and the next restore would be full too (`lazy-restore = off`, or
    /// `auto` below its threshold); a container restored lazily is checkpointed in full anyway.
    private func tracksRestore() -> Bool {
        checkpointer.checkpointer.tracksWrites
            && !lazyRestore.restoresLazily(pageBytes: Self.chainPageBytes(imagesDirectory), userfaultfdUsable: true)
    }

    /// The page images' bytes of the folder and of its chain of parents: as CRIU's `parent` links
    /// name them (a tracked restore's kept images, `prev`, `prev/prev`, …, or a pre-dump), or the
    /// kept images of a restore not yet dumped on.
    static func chainPageBytes(_ folder: String) -> UInt64 {
        var total: UInt64 = 0
        var current = folder
        for _ in 0...maximumParentChain + 1 {
            total += RestorePreparation.pageBytes(inImages: current)
            guard
                let next = [criuParentLink, parentDirectoryName].lazy.map({ current + "/" + $0 })
                    .first(where: { FileManager.default.fileExists(atPath: $0) })
            else { break }
            current = next
        }
        return total
    }

    /// The link CRIU leaves in an incremental dump's folder, to its parent's.
    static let criuParentLink = "parent"

    /// One dump into the images folder: on top of the pre-dump (`onPreDump`; `tracked`: its write
    /// tracking is held, dirty is written since), on top of the kept parent of a tracked restore
    /// (`parent`), or plain.
    private func dump(parent: Bool, onPreDump: Bool = false, tracked: Bool = false) async throws -> ScaleDownReport {
        var options = ContainerCheckpointOptions()
        options.criu.orphanPtsMaster = terminal
        options.criu.logLevel = logLevel
        // The restore joins the same pod network namespace, which keeps its conntrack entries
        // meanwhile (decision 0075).
        options.criu.leavesConntrackOut = true
        if onPreDump {
            options.criu.parentImages = Self.preDumpDirectoryName
            options.criu.trackMemory = true
            options.criu.dirtyFromWriteTracking = tracked
        } else if parent {
            options.criu.parentImages = Self.parentDirectoryName
            options.criu.trackMemory = true
            options.criu.dirtyFromWriteTracking = true
        }
        if keepsConnections {
            options.criu.tcpEstablished = true
            options.criu.tcpClose = false
        }
        let (checkpointer, target, images) = (checkpointer, target, imagesDirectory)
        let (connections, pid) = (connections, await container.current?.pid)
        // Owner-only from creation, parents included (decision 0033): the images are the
        // container's memory.
        try Files.makeOwnerOnlyDirectory(FilePath(images))
        do {
            let result = try await NIOThreadPool.singleton.runIfActive { [options] in
                // The hooks are made here: they are not Sendable.
                let hooks = Self.connectionHooks(connections, pid: pid, imagesDirectory: images)
                return try checkpointer.checkpoint(target, imagesDir: FilePath(images), options: options, hooks: hooks)
            }
            var details = ["criu": "\(result.dump.timings)"]
            if let stats = result.dump.stats { details["stats"] = "\(stats)" }
            if let connections {
                details["held"] = "\(connections.heldConnections.count)"
                // The processes are gone: handover listeners can take their ports (decision 0046).
                details["handed-over"] = "\(connections.checkpointed())"
            }
            return ScaleDownReport(details: details)
        } catch {
            connections?.dumpFailed()
            throw error
        }
    }

    /// CRIU's `pre-dump` holds the container's connections as `/proc` shows them (before CRIU
    /// seizes the processes); `post-dump` holds exactly those the images recorded and remembers
    /// the listening sockets for the handover (decisions 0045, 0046).
    private static func connectionHooks(
        _ connections: ContainerConnections?,
        pid: Int32?,
        imagesDirectory: String
    ) -> CRIUHooks {
        var hooks = CRIUHooks()
        guard let connections else { return hooks }
        let images = FilePath(imagesDirectory)
        let keepingTreeAt = connections.settings.keepConnections ? pid : nil
        hooks["pre-dump"] = { _ in
            // A listener restored less than 10 s ago may still have its backlog raised (decision
            // 0056): the images must record the application's own.
            connections.settleWidenedListeners(force: true)
            if let keepingTreeAt {
                connections.dumpStarting(connections: PortDiscovery.connections(ofTreeAt: keepingTreeAt))
            }
        }
        hooks["post-dump"] = { _ in
            // A hook that throws would abort the dump; an unreadable image only costs the
            // handover and the hold (logged by the caller's failure path if the dump fails).
            let sockets = (try? CRIUInetSockets.read(imagesDir: images)) ?? []
            connections.dumped(
                connections: sockets.filter(\.isConnection).map(\.tuple),
                listeners: sockets.filter(\.isListener).map(\.listenerAddress)
            )
        }
        return hooks
    }

    func preDump() async throws -> ScaleDownReport {
        let dir = imagesDirectory + "/" + Self.preDumpDirectoryName
        let (checkpointer, target, tracking) = (checkpointer, target, preDumpTracking)
        var options = ContainerCheckpointOptions()
        options.criu.logLevel = logLevel
        options.criu.orphanPtsMaster = terminal
        // A new generation: the next checkpoint is on this pre-dump, so what was held for an
        // earlier one, or for the last restore, ends here — before the pre-dump: a mapping still
        // registered with the restore's userfaultfd cannot be registered with the pre-dump's.
        writeTracking.release()
        preDumpTracking.release()
        let root = await container.current?.pid
        do {
            try? FileManager.default.removeItem(atPath: dir)
            try Files.makeOwnerOnlyDirectory(FilePath(dir))
            let result = try await NIOThreadPool.singleton.runIfActive { [options] in
                // Without soft-dirty the pre-dump hands over its tasks' write tracking (decision 0078).
                var hooks = CRIUHooks()
                if let root { hooks.holdingPreDumpTracking(in: tracking, treeAt: root) }
                return try checkpointer.preDump(target, imagesDir: FilePath(dir), options: options, hooks: hooks)
            }
            var details = ["criu": "\(result.timings)"]
            if let stats = result.stats { details["stats"] = "\(stats)" }
            if let summary = tracking.summary { details["write-tracking"] = "\(summary)" }
            return ScaleDownReport(details: details)
        } catch {
            tracking.release()
            try? FileManager.default.removeItem(atPath: dir)
            _ = rmdir(imagesDirectory)  // only when empty
            throw error
        }
    }

    func prepareRestore() async throws -> any PreparedRestore {
        let options = try await restoreOptions()
        let (checkpointer, target, images, mode, pids) = (checkpointer, target, imagesDirectory, lazyRestore, pids)
        let tracking = tracksRestore() ? writeTracking : nil
        let handle = container
        let adoptTerminal: @Sendable (SharedDescriptor) async -> Void = { master in
            if let container = handle.current { await container.adoptInitTerminal(master) } else { master.close() }
        }
        return try await NIOThreadPool.singleton.runIfActive { () throws -> RestorePreparation in
            let bytes = Self.chainPageBytes(images)
            var lazy = mode.restoresLazily(pageBytes: bytes, userfaultfdUsable: true)
            var why = "lazy-restore = \(mode.rawValue), \(bytes >> 20) MiB of pages"
            let criu = checkpointer.checkpointer.criuPath.string
            if lazy && !RestorePreparation.userfaultfdUsable(criuPath: criu) {
                lazy = false
                why += ", but CRIU reports no lazy-pages (userfaultfd) support"
            }
            if lazy && FileManager.default.fileExists(atPath: images + "/" + Self.criuParentLink)
                && !checkpointer.checkpointer.preDumpsTrackWrites()
            {
                // Incremental images (decisions 0077, 0078) are restored lazily only by zeropod's
                // CRIU build, whose lazy-pages daemon reads through parents.
                lazy = false
                why += ", but the images have a parent (incremental checkpoint) this CRIU reads only fully"
            }
            return try RestorePreparation(
                checkpointer: checkpointer,
                container: target,
                imagesDir: FilePath(images),
                options: options,
                lazy: lazy,
                why: why,
                pids: pids,
                connections: connections,
                writeTracking: tracking,
                adoptTerminal: adoptTerminal
            )
        }
    }

    func restoreFully() async throws -> RestoredProcess {
        let options = try await restoreOptions()
        let (checkpointer, target, images, connections) = (checkpointer, target, imagesDirectory, connections)
        let tracking = tracksRestore() ? writeTracking : nil
        let result: ContainerRestoreResult
        do {
            result = try await NIOThreadPool.singleton.runIfActive {
                try checkpointer.restore(
                    target,
                    imagesDir: FilePath(images),
                    options: options,
                    hooks: Self.restoreHooks(connections, terminal: options.terminal, writeTracking: tracking)
                )
            }
        } catch {
            connections?.restoreFailed()
            throw error
        }
        if let master = result.terminalMaster {
            if let container = container.current { await container.adoptInitTerminal(master) } else { master.close() }
        }
        var details = result.details
        if let tracking { details["write-tracking"] = tracking.summary.map { "\($0)" } ?? "none" }
        return RestoredProcess(pid: result.pid, details: details)
    }

    /// Restores the container from images another container's checkpoint made (an offline
    /// migration's, decision 0057) and removes them: CRIU directly with this container's host side
    /// (ZPCheckpoint's `migrated`), established connections closed.
    func restoreMigrated() async throws -> RestoredProcess {
        var options = try await restoreOptions()
        options.migrated = true
        // Connections the source dumped (`tcp_established`) are allowed in the images and come
        // back closed (ZPCheckpoint sets `tcp_close` for migrated images).
        options.criu.tcpEstablished = true
        let (checkpointer, target, images) = (checkpointer, target, imagesDirectory)
        let result = try await NIOThreadPool.singleton.runIfActive { [options] in
            try checkpointer.restore(target, imagesDir: FilePath(images), options: options)
        }
        removeImages()
        if let master = result.terminalMaster {
            if let container = container.current { await container.adoptInitTerminal(master) } else { master.close() }
        }
        return RestoredProcess(pid: result.pid, details: result.details)
    }

    /// CRIU's `post-restore` (the sockets are back, the processes not yet resumed: where CRIU
    /// itself would unlock its network lock) releases the held connections; `post-resume` (the
    /// processes run) closes the handover listeners, which moves their queues to the application
    /// (decision 0046). Not for a container with a terminal: its first client could then act
    /// (for instance attach and type) before the shim has taken CRIU's new pty master, and its
    /// input would go to the old terminal; its listeners close at the redirect-off, as before.
    static func restoreHooks(
        _ connections: ContainerConnections?,
        terminal: Bool,
        writeTracking: WriteTracking?
    ) -> CRIUHooks {
        var hooks = CRIUHooks()
        if let connections {
            hooks["post-restore"] = { notification in
                // The restored listeners on the handed-over ports, whose backlog is raised while
                // they take the queues over (decision 0056).
                let ports = Set(connections.handoverPorts)
                let listeners =
                    ports.isEmpty
                    ? []
                    : notification.pid.map {
                        PortDiscovery.listenerDescriptors(on: ports, treeAt: $0)
                    } ?? []
                connections.socketsRestored(applicationListeners: listeners)
            }
            if !terminal { hooks["post-resume"] = { _ in connections.processesResumed() } }
        }
        if let writeTracking { hooks.holdingWriteTracking(in: writeTracking) }
        return hooks
    }

    func removeImages() {
        removeImages(keepingPreDump: false)
    }

    /// Removes the checkpoint images (and the pre-dump inside them), or everything but the
    /// pre-dump when `keepingPreDump`.
    private func removeImages(keepingPreDump: Bool) {
        // After a tracked restore the images become the next checkpoint's parent while the
        // restored processes run (decision 0077); otherwise they go, and any hold with them.
        if !keepingPreDump, writeTracking.holdsRunningTree, keepImagesAsParent() { return }
        writeTracking.release()
        guard keepingPreDump else {
            preDumpTracking.release()
            // A CRIU worker killed mid-restore (a hung lazy-pages daemon, a timeout) leaves its
            // cgroup yard (`.criu.cgyard.*`) mounted in the folder, which then cannot be removed.
            for mountPoint in MountPoints.under(imagesDirectory + "/") { try? MountPoints.unmount(mountPoint) }
            try? FileManager.default.removeItem(atPath: imagesDirectory)
            try? FileManager.default.removeItem(atPath: imagesDirectory + Self.movingSuffix)
            _ = rmdir(namespaceImagesDirectory)  // only when empty
            return
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: imagesDirectory)) ?? []
        for entry in entries where entry != Self.preDumpDirectoryName {
            try? FileManager.default.removeItem(atPath: imagesDirectory + "/" + entry)
        }
    }

    /// Moves the images of the last restore into their own `prev` folder inside the (new, empty)
    /// images folder, where the next dump finds them as its parent. Already done when the folder
    /// holds no images of its own.
    /// - Returns: false when they could not be moved (the caller then removes everything).
    private func keepImagesAsParent() -> Bool {
        let folder = imagesDirectory
        guard FileManager.default.fileExists(atPath: folder + "/inventory.img") else {
            return FileManager.default.fileExists(atPath: folder + "/" + Self.parentDirectoryName + "/inventory.img")
        }
        for mountPoint in MountPoints.under(folder + "/") { try? MountPoints.unmount(mountPoint) }
        let moving = folder + Self.movingSuffix
        try? FileManager.default.removeItem(atPath: moving)
        guard rename(folder, moving) == 0 else { return false }
        guard (try? Files.makeOwnerOnlyDirectory(FilePath(folder))) != nil,
            rename(moving, folder + "/" + Self.parentDirectoryName) == 0
        else {
            try? FileManager.default.removeItem(atPath: moving)
            return false
        }
        return true
    }

    /// Restore options with the container side of the init's stdio pipes, kept from create, so
    /// output after a restore reaches containerd.
    func restoreOptions() async throws -> ContainerRestoreOptions {
        guard let container = container.current else { throw ScaleDownError("container \(target.id) was deleted") }
        var options = ContainerRestoreOptions()
        options.stdio = await container.initContainerSideStdio()
        options.terminal = terminal
        options.criu.logLevel = logLevel
        if keepsConnections {
            options.criu.tcpEstablished = true
            options.criu.tcpClose = false
        }
        return options
    }
}

extension ContainerRestoreResult {
    /// What the driver logs about a restore: CRIU's timings, the worker's mount namespace
    /// (decision 0067) and any cgroup corrections.
    var details: [String: String] {
        var out = ["criu": "\(restore.timings)", "worker-mounts": "\(workerMountNamespace)"]
        if !cgroupCorrections.isEmpty { out["cgroup-corrections"] = cgroupCorrections.joined(separator: ", ") }
        return out
    }
}

/// The status board as the driver's ``ScaleDownStatusSink``.
struct StatusBoardSink: ScaleDownStatusSink {
    let board: ShimStatusBoard
    let id: String

    func containerChanged(phase: ContainerLifecycle.Phase, pid: Int32?, report: ScaleDownStatusReport?) {
        let event: StatusAPI.Event?
        switch report {
        case nil: event = nil
        case .checkpointed(let duration): event = .checkpointFinished(duration: duration)
        case .checkpointFailed(let reason): event = .checkpointFailed(reason: reason)
        case .restored(let duration): event = .restoreFinished(duration: duration)
        case .restoreFailed(let reason): event = .restoreFailed(reason: reason)
        case .wouldScaleDown: event = .wouldScaleDown
        case .wouldRestore: event = .wouldRestore
        }
        board.update(id: id, phase: phase, pid: pid, event: event)
    }
}

extension WakeGroupMember: ScaleDownWakeGroup {}

extension ScaleDownDriver {
    /// A `Wake` call from another member of the container's group (decision 0011), answered from
    /// the lifecycle's `groupWakeRequested`: a scaled-down container comes back as if a connection
    /// came (the call holds until it runs), without waking the group again. A container that runs,
    /// is already coming back or stopped is left alone.
    /// - Throws: ``ScaleDownError`` when the container cannot come back.
    func wakeRequestedByGroup() async throws -> StatusAPI.WakeResponse {
        let start = ContinuousClock.now
        switch try await groupWakeRequested() {
        case nil:
            return StatusAPI.WakeResponse(outcome: .woken, lifecyclePhase: phase, waited: ContinuousClock.now - start)
        case .alreadyWaking:
            return StatusAPI.WakeResponse(outcome: .alreadyWaking, lifecyclePhase: phase)
        case .notScaledDown:
            return StatusAPI.WakeResponse(outcome: .notScaledDown, lifecyclePhase: phase)
        case .stopped:
            return StatusAPI.WakeResponse(outcome: .stopped, lifecyclePhase: phase)
        }
    }
}
