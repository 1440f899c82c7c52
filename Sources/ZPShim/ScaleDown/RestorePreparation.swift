import NIOPosix
import Synchronization
import SystemPackage
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

/// A restore made ready while a container is scaled down (docs/decisions/0009-lazy-restore-in-driver.md):
/// the CRIU worker started with the inherited descriptors, the rootfs bind mount, and for a lazy
/// restore the `criu lazy-pages` daemon serving the image folder.
///
/// The driver's ``PreparedRestore``; its `RestoreSupervision` decides when it runs, when its daemon
/// is judged and when it is discarded (decision 0017).
///
/// Owns all of them: ``run()`` uses the prepared restore once; ``discard()`` (idempotent) releases
/// whatever is left: the worker and mounts, and the daemon (killed if it still runs). After a lazy
/// restore the object stays alive while the daemon pushes the remaining pages; the image folder
/// must stay until ``daemonExited()`` says so. Every blocking call runs under the object's own
/// lock, so a discard never races a run.
final class RestorePreparation: Sendable {
    private struct Parts {
        var restore: PreparedContainerRestore?
        var daemon: LazyPagesDaemon?
        /// How the daemon ended, when this object reaped it (kept after `daemon` is dropped).
        var daemonTermination: LazyPagesDaemon.Termination?
        /// The daemon's userfaultfds, still held after it ended without proof that it served
        /// every page (decision 0069): released by ``discard()``, after the supervision killed the
        /// restored processes.
        var orphanedFaultHandlers: [SharedDescriptor] = []
    }

    private let parts: Mutex<Parts>
    /// Whether the prepared restore is lazy (a daemon was started for it).
    let lazy: Bool
    /// Why a lazy restore was wanted but not prepared (the daemon did not start); nil otherwise.
    let lazyFallbackReason: String?
    /// The daemon's pid, when lazy.
    let daemonPID: Int32?
    /// When the daemon was started (nanoseconds since the Unix epoch): an exit of its pid kept by
    /// the shim's reaper before that belongs to another process.
    let daemonStartedAt: Int64
    /// The daemon's log (`lazy-pages.log` in the image folder), when lazy.
    let daemonLog: FilePath?
    /// Why lazy or full (the setting, the size of the pages, CRIU's support), for the log.
    let why: String
    /// The shim's pid index, which keeps the daemon's exit when the shim's reaper got it first.
    let pids: PidIndex
    /// The container's held connections, released at CRIU's `post-restore` (decision 0045).
    let connections: ContainerConnections?
    /// Where a full restore's write tracking is held (decision 0077); nil for a lazy restore or
    /// when the shim's checkpointer does not track writes.
    let writeTracking: WriteTracking?
    /// The init has a terminal (the handover then ends at the redirect-off, see
    /// ``CRIUCheckpoints/restoreHooks(_:terminal:writeTracking:)``).
    let terminal: Bool
    /// Takes the restored terminal's master (containers with a terminal).
    let adoptTerminal: @Sendable (SharedDescriptor) async -> Void
    /// The container (its cgroups hold the CRIU worker and the restored tasks during the restore).
    let container: RuncContainer
    /// How long the daemon of a lazy restore may make no progress while CRIU restores, before the
    /// restore is stopped (its worker and tasks killed, then the daemon).
    let stallLimit: Duration
    /// The prepared CRIU worker's pid (its reads count as progress of a lazy restore too).
    let workerPID: Int32?
    /// Set when the restore was stopped because the daemon hung (the reason).
    private let stalled = Mutex<String?>(nil)
    /// How many userfaultfds of the daemon were held when a lazy restore answered (decision 0069).
    private let heldAfterRestore = Mutex<Int?>(nil)

    /// Prepares the restore of `container` from `imagesDir` (blocking: run it off the event loops).
    ///
    /// - Parameters:
    ///   - lazy: start `criu lazy-pages` for the images and prepare a RESTORE with `lazy_pages`.
    ///     When the daemon does not become ready, the restore is prepared as a full one and
    ///     ``lazyFallbackReason`` says why.
    ///   - why: why lazy or full, for the log.
    ///   - pids: the shim's pid index (how the daemon ended, when the reaper got it first).
    ///   - connections: the container's held connections (released when CRIU has restored the
    ///     sockets, or when the restore fails).
    ///   - adoptTerminal: takes the restored terminal's master (with `options.terminal`).
    /// - Throws: `ContainerCheckpointError` when the restore itself cannot be prepared (nothing
    ///   is left running then).
    init(
        checkpointer: ContainerCheckpointer,
        container: RuncContainer,
        imagesDir: FilePath,
        options: ContainerRestoreOptions,
        lazy: Bool,
        why: String,
        pids: PidIndex,
        connections: ContainerConnections? = nil,
        writeTracking: WriteTracking? = nil,
        adoptTerminal: @escaping @Sendable (SharedDescriptor) async -> Void = { $0.close() },
        stallLimit: Duration = .seconds(10)
    ) throws(ContainerCheckpointError) {
        var daemon: LazyPagesDaemon?
        var reason: String?
        let startedAt = SystemClock.realtimeNanoseconds()
        if lazy {
            do {
                daemon = try LazyPagesDaemon(
                    criuPath: checkpointer.checkpointer.criuPath,
                    imagesDir: imagesDir,
                    readyTimeout: .seconds(20)
                )
            } catch {
                reason = "criu lazy-pages did not start: \(error)"
            }
        }
        var o = options
        if daemon != nil {
            o.criu.lazyPages = true
            o.criu.workDir = imagesDir
        }
        let restore: PreparedContainerRestore
        do throws(ContainerCheckpointError) {
            restore = try checkpointer.prepareRestore(container, imagesDir: imagesDir, options: o)
        } catch {
            daemon?.stop()
            throw error
        }
        self.lazy = daemon != nil
        self.lazyFallbackReason = reason
        self.daemonPID = daemon?.pid
        self.daemonStartedAt = startedAt
        self.daemonLog = daemon?.logPath
        self.why = why
        self.pids = pids
        self.connections = connections
        // A lazy restore is not tracked (CRIU's restorer leaves its memory alone).
        self.writeTracking = daemon == nil ? writeTracking : nil
        self.terminal = options.terminal
        self.adoptTerminal = adoptTerminal
        self.container = container
        self.stallLimit = stallLimit
        self.workerPID = restore.workerPID
        parts = Mutex(Parts(restore: restore, daemon: daemon))
    }

    /// Restores with the prepared worker (blocking). The prepared restore is used up whatever the
    /// outcome; on failure the daemon is stopped too, so only ``discard()`` remains to be called.
    /// - Throws: `ContainerCheckpointError`, or `.invalidState` when already run or discarded.
    func runBlocking() throws(ContainerCheckpointError) -> ContainerRestoreResult {
        try parts.withLock { (p) throws(ContainerCheckpointError) -> ContainerRestoreResult in
            guard let restore = p.restore else {
                throw .invalidState(container: "", reason: "the prepared restore was already used or discarded")
            }
            p.restore = nil
            var hooks = CRIUCheckpoints.restoreHooks(connections, terminal: terminal, writeTracking: writeTracking)
            if let daemon = p.daemon { hooks.holdingFaultHandlers(of: daemon) }
            do throws(ContainerCheckpointError) {
                let result = try restore.run(hooks: hooks)
                heldAfterRestore.withLock { $0 = p.daemon?.heldFaultHandlers }
                return result
            } catch {
                p.daemon?.stop()
                p.daemon = nil
                connections?.restoreFailed()
                throw error
            }
        }
    }

    /// Whether the lazy-pages daemon is gone (true when there is none). Does not block. While it
    /// runs, the hold on its userfaultfds follows its table; once it ended, the hold is released
    /// when its exit code or its log shows every page served, else kept for ``discard()``.
    func daemonExited() -> Bool {
        parts.withLock { p in
            guard let daemon = p.daemon else { return true }
            guard daemon.waitForExit(timeout: .zero) else { return false }
            p.daemonTermination = daemon.termination
            let served =
                daemon.termination.map(\.isClean)
                ?? LazyPagesDaemon.logShowsEveryProcessServed(daemon.logPath)
            if served {
                daemon.releaseFaultHandlers()
            } else {
                p.orphanedFaultHandlers += daemon.takeFaultHandlers()
            }
            p.daemon = nil
            return true
        }
    }

    /// How the daemon ended, when this object reaped it; nil while it runs, when there was none, or
    /// when the shim's reaper got its exit first (then ``PidIndex`` keeps it).
    var daemonTermination: LazyPagesDaemon.Termination? {
        parts.withLock { $0.daemonTermination }
    }

    /// Releases everything still held: cancels an unused prepared restore (worker, descriptors,
    /// mounts), kills a daemon that still runs, and releases its userfaultfds (the supervision
    /// kills the restored processes before, when they may lack pages). Idempotent.
    func discard() {
        parts.withLock { p in
            p.restore?.cancel()
            p.restore = nil
            if let daemon = p.daemon {
                daemon.stop()
                p.daemonTermination = daemon.termination
            }
            p.daemon = nil
            for copy in p.orphanedFaultHandlers { copy.close() }
            p.orphanedFaultHandlers = []
        }
    }

    deinit { discard() }

    // MARK: the lazy decision

    private static let userfaultfdCache = Mutex<[String: Bool]>([:])

    /// Whether CRIU at `criuPath` can restore lazily on this node (FEATURE_CHECK lazy_pages,
    /// which needs a usable userfaultfd); asked once per CRIU binary and process.
    static func userfaultfdUsable(criuPath: String) -> Bool {
        if let known = userfaultfdCache.withLock({ $0[criuPath] }) { return known }
        let features = try? Checkpointer(criuPath: FilePath(criuPath)).features(CRIUFeatures(lazyPages: true))
        let usable = features?.lazyPages == true
        userfaultfdCache.withLock { $0[criuPath] = usable }
        return usable
    }

    /// The bytes of memory pages in a checkpoint: the sizes of its `pages-*.img` files.
    static func pageBytes(inImages imagesDir: String) -> UInt64 {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: imagesDir)) ?? []
        var total: UInt64 = 0
        for name in names where name.hasPrefix("pages-") && name.hasSuffix(".img") {
            var st = stat()
            if stat(imagesDir + "/" + name, &st) == 0 { total += UInt64(max(0, st.st_size)) }
        }
        return total
    }
}

extension RestorePreparation: PreparedRestore {
    /// `criu lazy-pages (pid N)` when lazy.
    var lazyDaemon: String? { daemonPID.map { "criu lazy-pages (pid \($0))" } }

    /// Lazy or not, why, and the daemon's pid.
    var summary: [String: String] {
        ["lazy": "\(lazy)", "why": why, "lazy-pages-pid": daemonPID.map(String.init) ?? "-"]
    }

    /// The bytes the daemon read and wrote so far (`rchar + wchar` of `/proc/<pid>/io`): it
    /// reads images (or a page server's socket) and writes into the restored process for every
    /// page, so a daemon that works moves it; a stopped or blocked one does not. Nil once this
    /// object reaped the daemon, or when the file cannot be read.
    func daemonProgress() -> UInt64? {
        guard let pid = daemonPID, parts.withLock({ $0.daemon != nil }) else { return nil }
        return Self.ioBytes(pid)
    }

    /// `rchar + wchar` of `/proc/<pid>/io`, nil when unreadable.
    static func ioBytes(_ pid: Int32) -> UInt64? {
        guard let text = try? Files.readText(FilePath("/proc/\(pid)/io")) else { return nil }
        var total: UInt64 = 0
        var found = 0
        for line in text.split(separator: "\n") where line.hasPrefix("rchar:") || line.hasPrefix("wchar:") {
            if let n = UInt64(line.split(separator: " ").last ?? "") {
                total &+= n
                found += 1
            }
        }
        return found == 2 ? total : nil
    }

    /// ``runBlocking()`` on NIO's thread pool (the CRIU RPC blocks). A lazy restore is watched
    /// meanwhile: CRIU's restored tasks fault on pages only the daemon serves, so a hung daemon
    /// holds the restore until CRIU's own timeout (120 s); a daemon whose progress figure stays the
    /// same for ``stallLimit`` ends the restore at once (``stopHungRestore(reason:)``) and the
    /// restore fails naming the hang.
    func run() async throws -> RestoredProcess {
        let result = try await withThrowingTaskGroup(of: ContainerRestoreResult?.self) { group in
            group.addTask { try await NIOThreadPool.singleton.runIfActive { try self.runBlocking() } }
            if lazy, let pid = daemonPID {
                group.addTask {
                    await self.watchDaemonDuringRestore(pid: pid)
                    return nil
                }
            }
            var restored: ContainerRestoreResult?
            do {
                while let next = try await group.next() {
                    if let next {
                        restored = next
                        group.cancelAll()
                    }
                }
            } catch {
                if let reason = stalled.withLock({ $0 }) {
                    throw ContainerCheckpointError.invalidState(container: container.id, reason: reason)
                }
                throw error
            }
            guard let restored else {
                throw ContainerCheckpointError.invalidState(
                    container: container.id,
                    reason: "the restore did not answer"
                )
            }
            return restored
        }
        if let master = result.terminalMaster { await adoptTerminal(master) }
        var details = result.details
        if let held = heldAfterRestore.withLock({ $0 }) { details["uffd-held"] = "\(held)" }
        if let writeTracking { details["write-tracking"] = writeTracking.summary.map { "\($0)" } ?? "none" }
        return RestoredProcess(pid: result.pid, details: details)
    }

    /// Polls the progress of the daemon and of the CRIU worker (every 100 ms; the worker reads the
    /// images of what is not restored lazily) until cancelled; when neither moved for
    /// ``stallLimit``, stops the restore.
    private func watchDaemonDuringRestore(pid: Int32) async {
        let worker = workerPID
        func progress() -> UInt64? {
            guard let daemon = Self.ioBytes(pid) else { return nil }
            return daemon &+ (worker.flatMap(Self.ioBytes) ?? 0)
        }
        var last = progress()
        var since = ContinuousClock.now
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
            let now = progress()
            if now != last || now == nil {
                last = now
                since = .now
                continue
            }
            if ContinuousClock.now - since >= stallLimit {
                stopHungRestore(
                    reason: "criu lazy-pages (pid \(pid)) made no progress for \(stallLimit.components.seconds) s "
                        + "during the restore (hung): the restore was stopped, its CRIU worker and tasks killed "
                        + "before the daemon"
                )
                return
            }
        }
    }

    /// Ends a restore whose daemon hung: kills everything in the container's cgroups (the CRIU
    /// worker and the tasks restored so far) first, so that no task runs on once the daemon is gone
    /// (a missing page would then be filled with zeros); the failed restore stops the daemon.
    private func stopHungRestore(reason: String) {
        stalled.withLock { $0 = reason }
        ContainerCgroupProcesses.killAll(id: container.id, runcRoot: container.runcRoot.string)
    }

    /// How the daemon ended, from the first source that knows: its own wait status (this object
    /// reaped it), the shim reaper's (kept in ``PidIndex``: it arrives a moment after the reap, so
    /// it is polled for 2 s), else CRIU's `lazy-pages.log` (a transfer summary for every process
    /// it took on). Clean means exit code 0, or a complete log.
    func daemonEnd() async -> (clean: Bool, how: String) {
        if let end = daemonTermination { return (end.isClean, "\(end), reaped by the driver") }
        if let pid = daemonPID {
            let deadline = ContinuousClock.now + .seconds(2)
            while true {
                if let exit = pids.takeExit(of: pid, notBefore: daemonStartedAt) {
                    let how = exit.code > 128 ? "signal \(exit.code - 128)" : "exit code \(exit.code)"
                    return (exit.code == 0, how + ", reaped by the shim's reaper")
                }
                if ContinuousClock.now >= deadline || Task.isCancelled { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        if let log = daemonLog, LazyPagesDaemon.logShowsEveryProcessServed(log) {
            return (true, "exit status unknown; its log has a transfer summary for every process")
        }
        return (false, "exit status unknown; its log lacks a transfer summary")
    }
}
