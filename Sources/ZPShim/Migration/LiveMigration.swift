// Live migration as the shim wires it (decision 0058): the source dumps its running container
// with CRIU `lazy_pages` and a page server on loopback, hands the images without the memory pages
// to the claimed target through its node (which proxies the page server over mutual TLS), and the
// container ends once the target's `criu lazy-pages` has taken every page; the target restores
// lazily from the pulled images with a lazy-pages daemon fed by its node's proxy, and starts
// from scratch when the page transfer breaks: never a process left on zero-filled pages.
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

/// The target's lazy-pages daemon after a live restore: it pulls the remaining pages from the
/// source (through the node's proxy) while the restored process runs.
///
/// The daemon's userfaultfds are held from CRIU's `post-restore` on (decision 0069): when the
/// transfer breaks, the restored processes wait on their missing pages instead of running on zero
/// pages, until the caller killed them and calls ``releaseFaultHandlers()``.
final class LivePages: Sendable {
    private let daemon: Mutex<LazyPagesDaemon?>
    /// The userfaultfds of a daemon that ended early, held until ``releaseFaultHandlers()``.
    private let orphaned = Mutex<[SharedDescriptor]>([])
    /// The daemon's log (which processes got all their pages).
    let log: FilePath

    init(daemon: sending LazyPagesDaemon) {
        log = daemon.logPath
        self.daemon = Mutex(daemon)
    }

    /// Restores `target` lazily from `images` (blocking) with the hold on the daemon's
    /// userfaultfds at CRIU's `post-restore`, under this object's lock.
    func restore(
        _ target: RuncContainer,
        with checkpointer: ContainerCheckpointer,
        imagesDir images: FilePath,
        options: ContainerRestoreOptions
    ) throws(ContainerCheckpointError) -> ContainerRestoreResult {
        try daemon.withLock { (d) throws(ContainerCheckpointError) -> ContainerRestoreResult in
            var hooks = CRIUHooks()
            if let d { hooks.holdingFaultHandlers(of: d) }
            return try checkpointer.restore(target, imagesDir: images, options: options, hooks: hooks)
        }
    }

    /// Waits (blocking; run it off the event loops) until the daemon exits or `timeout` passes.
    /// - Returns: nil when every page arrived (the daemon exited cleanly and its log shows every
    ///   restored process served; the held userfaultfds are released); otherwise why not (the
    ///   daemon is killed first when it still runs, and its userfaultfds stay held: kill the
    ///   restored processes, then call ``releaseFaultHandlers()``).
    func waitUntilTransferred(timeout: Duration) -> String? {
        daemon.withLock { d -> String? in
            guard let running = d else { return "the lazy-pages daemon is gone" }
            defer { d = nil }
            let broken = Self.breakage(of: running, timeout: timeout)
            if broken == nil {
                running.releaseFaultHandlers()
            } else {
                orphaned.withLock { $0 += running.takeFaultHandlers() }
                running.stop()
            }
            return broken
        }
    }

    private static func breakage(of running: LazyPagesDaemon, timeout: Duration) -> String? {
        guard running.waitForExit(timeout: timeout) else {
            return "the pages were not all transferred within \(timeout)"
        }
        let served = LazyPagesDaemon.logShowsEveryProcessServed(running.logPath)
        switch running.termination {
        case .some(let t) where !t.isClean:
            return "criu lazy-pages ended with \(t) before every page arrived"
        case .some, .none:
            // nil: the shim's reaper got its exit first; the log is the witness.
            return served ? nil : "criu lazy-pages ended before every page arrived (see \(running.logPath))"
        }
    }

    /// Releases the userfaultfds of a daemon that ended early: call it once the restored
    /// processes are killed. Idempotent.
    func releaseFaultHandlers() {
        let copies = orphaned.withLock { o in
            defer { o = [] }
            return o
        }
        for copy in copies { copy.close() }
    }

    /// Kills the daemon if it still runs and releases what it held (kill the restored processes
    /// first when they may lack pages). Idempotent.
    func stop() {
        daemon.withLock { d in
            d?.stop()
            d = nil
        }
        releaseFaultHandlers()
    }
}

/// When CRIU froze the tree (its `pre-dump` notification), for the hooks of one dump.
private final class FreezeTime: Sendable {
    let nanoseconds = Mutex<Int64>(0)
}

extension CRIUCheckpoints {
    /// Dumps the running container for a live migration (blocking one thread of the pool until the
    /// pages are transferred): CRIU `lazy_pages` with its page server on `127.0.0.1:<port>` (the
    /// address comes from `configFile`: CRIU's RPC ignores `ps.address` for a lazy dump), every
    /// image but the memory pages written at once. `ready` gets the freeze time (the `pre-dump`
    /// notification, in Unix nanoseconds) when the page server listens and the images are complete;
    /// it is finished when the dump ends either way. CRIU kills the tree once the page server's
    /// client is done (or went away). `timeout` bounds the whole dump: CRIU is killed after it.
    func checkpointLive(
        pageServerPort: Int32,
        configFile: String,
        timeout: Duration,
        ready: AsyncStream<Int64>.Continuation
    ) async throws -> ScaleDownReport {
        defer { ready.finish() }
        removeImages()
        var options = ContainerCheckpointOptions()
        options.criu.orphanPtsMaster = terminal
        options.criu.logLevel = logLevel
        options.criu.lazyPages = true
        options.criu.pageServer = CRIUPageServerInfo(address: "127.0.0.1", port: pageServerPort)
        options.criu.configFile = configFile
        options.criu.timeout = timeout
        // Established connections are closed at the dump, as for a scale-down's (decision 0003).
        let (checkpointer, target, images) = (checkpointer, target, imagesDirectory)
        try Files.makeOwnerOnlyDirectory(FilePath(images))
        let result = try await NIOThreadPool.singleton.runIfActive { [options] in
            let frozenAt = FreezeTime()
            var hooks = CRIUHooks()
            hooks["pre-dump"] = { _ in frozenAt.nanoseconds.withLock { $0 = SystemClock.realtimeNanoseconds() } }
            hooks["status-ready"] = { _ in
                let at = frozenAt.nanoseconds.withLock { $0 }
                ready.yield(at == 0 ? SystemClock.realtimeNanoseconds() : at)
            }
            return try checkpointer.checkpoint(target, imagesDir: FilePath(images), options: options, hooks: hooks)
        }
        var details = ["criu": "\(result.dump.timings)"]
        if let stats = result.dump.stats { details["stats"] = "\(stats)" }
        return ScaleDownReport(details: details)
    }

    /// Restores the container lazily from a live migration's images: a `criu lazy-pages` daemon
    /// fetching the pages from `127.0.0.1:<proxyPort>` (the shim's relay to the node's page socket,
    /// where the node's manager relays to the source's page-server proxy; decision 0063), then CRIU's restore with `lazy_pages` (ZPCheckpoint's `migrated`). The images stay
    /// until the pages are all in (the daemon reads their page maps): remove them afterwards.
    ///
    /// The daemon connects to the proxy once the restore handed it the processes' userfaultfds;
    /// when it cannot (the target's manager, and its page socket with it, went away before) or loses the
    /// connection, it exits and CRIU's restore would wait on the restored tasks until its bound
    /// (60 s). The daemon is watched meanwhile: when it ends before the restore answered, every
    /// process in the container's cgroups (the CRIU worker, the tasks restored so far) is killed at
    /// once and the restore fails naming why (then the container starts from scratch).
    func restoreMigratedLive(proxyPort: Int32) async throws -> (RestoredProcess, LivePages) {
        var options = try await restoreOptions()
        options.migrated = true
        options.criu.tcpEstablished = true
        options.criu.lazyPages = true
        options.criu.workDir = FilePath(imagesDirectory)
        // A lazy restore answers in well under a second here; CRIU waits on a daemon that lost
        // its page server until this bound unless the watch below ends it first.
        options.criu.timeout = .seconds(60)
        let (checkpointer, target, images, restoreOptions) = (checkpointer, target, imagesDirectory, options)
        let watch = LiveRestoreWatch()
        let outcome = await withTaskGroup(of: Result<(ContainerRestoreResult, LivePages), any Error>?.self) { group in
            group.addTask {
                do {
                    return .success(
                        try await NIOThreadPool.singleton.runIfActive {
                            () throws -> (ContainerRestoreResult, LivePages) in
                            let daemon = try LazyPagesDaemon(
                                criuPath: checkpointer.checkpointer.criuPath,
                                imagesDir: FilePath(images),
                                pageServer: CRIUPageServerInfo(address: "127.0.0.1", port: proxyPort),
                                readyTimeout: .seconds(20)
                            )
                            watch.daemonPID.withLock { $0 = daemon.pid }
                            let pages = LivePages(daemon: daemon)
                            do {
                                let result = try pages.restore(
                                    target,
                                    with: checkpointer,
                                    imagesDir: FilePath(images),
                                    options: restoreOptions
                                )
                                watch.daemonPID.withLock { $0 = nil }
                                return (result, pages)
                            } catch {
                                watch.daemonPID.withLock { $0 = nil }
                                pages.stop()
                                throw error
                            }
                        }
                    )
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                // The daemon's end while the restore runs: its page server is gone.
                while !Task.isCancelled {
                    do { try await Task.sleep(for: .milliseconds(50)) } catch { return nil }
                    let ended = watch.daemonPID.withLock { pid -> Int32? in
                        guard let daemon = pid, !processRuns(daemon) else { return nil }
                        pid = nil
                        return daemon
                    }
                    guard let ended else { continue }
                    // A daemon that served everything (a small app, done before the restore
                    // answered) ended as it should.
                    if LazyPagesDaemon.logShowsEveryProcessServed(FilePath(images).appending("lazy-pages.log")) {
                        return nil
                    }
                    watch.reason.withLock {
                        $0 =
                            "criu lazy-pages (pid \(ended)) ended during the restore (it could not reach or lost the "
                            + "shim's page relay on 127.0.0.1:\(proxyPort) to the node's page socket): the restore was stopped at once, its CRIU "
                            + "worker and the tasks restored so far killed"
                    }
                    ContainerCgroupProcesses.killAll(id: target.id, runcRoot: target.runcRoot.string)
                    return nil
                }
                return nil
            }
            var outcome: Result<(ContainerRestoreResult, LivePages), any Error> = .failure(
                ScaleDownError("the live restore did not answer")
            )
            for await next in group {
                guard let next else { continue }
                outcome = next
                group.cancelAll()
            }
            return outcome
        }
        let (result, pages): (ContainerRestoreResult, LivePages)
        switch outcome {
        case .success(let restored): (result, pages) = restored
        case .failure(let error):
            if let reason = watch.reason.withLock({ $0 }) { throw ScaleDownError("\(reason) (\(error))") }
            throw error
        }
        if let master = result.terminalMaster {
            if let container = container.current { await container.adoptInitTerminal(master) } else { master.close() }
        }
        return (RestoredProcess(pid: result.pid, details: result.details), pages)
    }
}

/// What the watch of a live restore shares with the restore: the lazy-pages daemon's pid while the
/// restore runs, and why the watch stopped it.
private final class LiveRestoreWatch: Sendable {
    let daemonPID = Mutex<Int32?>(nil)
    let reason = Mutex<String?>(nil)
}

/// Whether process `pid` runs: it exists and is no zombie (an exited child the shim's reaper has
/// not collected yet).
private func processRuns(_ pid: Int32) -> Bool {
    guard let stat = try? Files.readText(FilePath("/proc/\(pid)/stat")),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(after: close)...].drop { $0 == " " }.first
    return state != "Z" && state != "X"
}

/// A free TCP port on 127.0.0.1 for CRIU's page server (bound and released: CRIU binds it again
/// right after; another process taking it meanwhile makes the dump fail, and the container stops
/// as without migration).
func pageServerLoopbackPort() throws -> Int32 {
    let fd = try systemCall("socket", "page server port") { socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = try withUnsafeMutablePointer(to: &address) { pointer in
        try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
            _ = try systemCall("bind", "127.0.0.1:0") { bind(fd, generic, length) }
            return try systemCall("getsockname", "page server port") { getsockname(fd, generic, &length) }
        }
    }
    return Int32(UInt16(bigEndian: address.sin_port))
}

/// Ends a lazy dump's wait for its page server's client: connects to the page server and closes
/// at once, which CRIU takes as the end of the transfer (the dump then finishes and kills the
/// tree). Used when the pages will never be fetched (the node refused the evacuation).
func releasePageServer(port: Int32) {
    guard let fd = try? systemCall("socket", "page server release", { socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) })
    else { return }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(truncatingIfNeeded: port).bigEndian
    _ = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
}
