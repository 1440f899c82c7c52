import Logging
import NIOCore
import NIOPosix
import ZPCore
import ZPSystem
import ZPTTRPC

#if canImport(Glibc)
import Glibc
#endif

/// The shim daemon: a child subreaper serving the task API on the socket passed as fd 3, forwarding
/// events to containerd, until containerd asks it to shut down with no containers left; then it
/// forwards the queued events (at most 5 s) and exits the process.
public enum ShimDaemon {
    /// Threads of NIO's blocking pool in a shim process, whatever the node's core count.
    static let blockingPoolThreads = 2

    /// Serves until shutdown, then removes the socket file and exits the process (never returns
    /// normally).
    /// - Throws: ``SystemError`` when the shim cannot become a subreaper; NIO errors from the socket.
    public static func run(_ options: ShimCommandLine) async throws {
        // NIO's blocking pool (CRIU, runc and file work) would start one thread per core, each
        // with its stack, in every shim of the node; a shim serves one pod, and two threads are
        // what every test and benchmark here runs with (decision 0061). Set before its first use.
        NIOSingletons.blockingPoolThreadCountSuggestion = ShimDaemon.blockingPoolThreads
        signal(SIGPIPE, SIG_IGN)
        var logger = Logger(label: "containerd-shim-zeropod-v2") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = options.debug ? .debug : .info
        logger[metadataKey: "id"] = "\(options.id)"
        try Reaper.becomeSubreaper()
        let log = logger

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let publisher = EventPublisher(
            address: getenv("TTRPC_ADDRESS").map { String(cString: $0) } ?? "",
            group: group,
            logger: logger
        )
        let settings = NodeSettings.load()  // a refused file fails every Create (decision 0032)
        // Images of containers from before the boot (decision 0053): nothing resumes them.
        let stale = StaleImages.sweep(layout: settings.config.layout)
        if !stale.isEmpty {
            logger.info("removed checkpoint images from before the boot", metadata: ["folders": "\(stale)"])
        }
        let statusBoard = ShimStatusBoard()  // the manager's view: <run-dir>/s/<hash>.sock
        let statusSocket =
            options.socket.isEmpty ? nil : settings.config.layout.statusSocket(forShimSocket: options.socket)
        let service = TaskService(
            namespace: options.namespace,
            publisher: publisher,
            group: group,
            statusBoard: statusBoard,
            statusSocket: statusSocket,
            node: settings,
            logger: logger
        )
        let server = TTRPCServer(router: statusBoard.tracking(service.router()), group: group, logger: logger)
        logger.info("shim serving", metadata: ["socket": "\(options.socket)", "pid": "\(getpid())"])

        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                do {
                    try await server.run(listeningDescriptor: 3)
                } catch is CancellationError {
                } catch {
                    log.error("ttrpc server failed: \(error)")
                }
                log.debug("ttrpc server stopped")
            }
            tasks.addTask {
                await service.deliverExits(Reaper.shared.orphanExits)
                log.debug("exit delivery stopped")
            }
            tasks.addTask { await service.runBackgroundJobs() }
            tasks.addTask { await holdPerfSchedulingHooks(log) }
            tasks.addTask {
                await ShimStatusService(board: statusBoard, wake: { try await service.wake($0) })
                    .serve(socketPath: statusSocket, group: group, logger: log)
            }
            await withTaskGroup(of: Void.self) { events in
                events.addTask {
                    await publisher.run()
                    log.debug("publisher stopped")
                }
                await service.waitForShutdown()
                // Hard deadline, as Go shims exit the process outright: whatever still hangs
                // (a peer that never closes, a stuck copy) must not keep a shim alive.
                let socket = options.socket
                group.next().scheduleTask(in: .seconds(7)) {
                    log.warning("shutdown deadline passed; exiting")
                    if !socket.isEmpty { unlink(socket) }
                    if let statusSocket { unlink(statusSocket) }
                    exit(0)
                }
                // Forward what is queued (TaskDelete comes right before Shutdown), at most 5 s.
                publisher.finish()
                events.addTask { try? await Task.sleep(for: .seconds(5)) }
                await events.next()
                events.cancelAll()
            }
            statusBoard.finishSubscriptions()
            // Exit without cancelling the servers: NIO traps when an accepted connection that was
            // never handed to a task is dropped, which cancellation could race into. The process ends
            // here anyway, as Go shims do; the status socket goes with the task API socket.
            if !options.socket.isEmpty { unlink(options.socket) }
            if let statusSocket { unlink(statusSocket) }
            log.info("shim exiting")
            exit(0)
        }
    }

    /// Holds a dummy perf event for the life of the shim, so that CRIU's hardware breakpoints in
    /// this node's checkpoints and restores do not wait for an RCU grace period each (decision
    /// 0076). Opened on NIO's blocking pool: the first one on a quiet node waits for that grace
    /// period itself, beside the shim's start. Returns when cancelled (the shim exits first).
    static func holdPerfSchedulingHooks(_ log: Logger) async {
        let fd: CInt
        do {
            fd = try await NIOThreadPool.singleton.runIfActive { try PerfScheduling.holdHooks().disown() }
        } catch {
            log.warning(
                "no dummy perf event: checkpoints and restores may wait for the kernel (decision 0076): \(error)"
            )
            return
        }
        let hold = OwnedDescriptor(adopting: fd)
        log.debug("holding a dummy perf event (decision 0076)")
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        try? hold.close()
    }
}
