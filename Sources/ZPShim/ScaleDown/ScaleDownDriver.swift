#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import ZPAPI
import ZPActivator
import ZPBPF
import ZPCheckpoint
import ZPCore
import ZPScaleDown
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Why the driver refused or failed a connection or an exec.
struct ScaleDownError: Error, CustomStringConvertible {
    /// What happened, naming the container.
    var description: String
}

/// The scale-to-zero driver of one container (docs/decisions/0007-scale-to-zero-driver.md).
///
/// Owns the container's ``ContainerLifecycle`` behind a `Mutex`: every fact (start, idle deadline,
/// connection, exec, signal, exit, delete) is applied under the lock, and the actions it returns
/// are queued, in order, to ONE consumer (``run()``) that carries them out outside the lock and
/// feeds the completions (checkpoint/restore finished or failed) back. Callers that need the
/// outcome (Kill, Delete, exits) wait until their actions were carried out; connections and execs
/// that the machine holds wait on continuations kept under the same lock.
final class ScaleDownDriver: Sendable {
    typealias Action = ContainerLifecycle.Action
    typealias Event = ContainerLifecycle.Event

    /// One batch of actions and the caller waiting for them, if any.
    private struct Work: Sendable {
        var actions: [Action]
        var done: CheckedContinuation<Void, Never>?
    }

    private struct State {
        var lifecycle: ContainerLifecycle
        var container: ShimContainer?
        var activator: PodActivator?
        var ports: [UInt16] = []
        var heldConnections: [CheckedContinuation<Void, any Error>] = []
        var heldExecs: [String: CheckedContinuation<Void, any Error>] = [:]
        var stopped = false
        var restoreSide = RestoreSideState()
        /// When the checkpoint of this scale-down started, kept over the plain retry that follows a
        /// failed incremental one (the logged and published time covers both).
        var checkpointStart: ContinuousClock.Instant?
    }

    /// The container id.
    let id: String
    private let bundle: String
    private let runc: RuncDriver
    private let config: ContainerConfig
    private let node: NodeConfig
    /// The pod network namespace (from the OCI spec).
    let netnsPath: String
    private let redirector: PodRedirector?
    private let pids: PidIndex
    private let group: any EventLoopGroup
    private let logger: Logger
    private let statusBoard: ShimStatusBoard?
    /// The container's wake group membership (`zeropod-swift/wake-group`), nil when it has none.
    let wakeGroup: WakeGroupMember?
    private let state: Mutex<State>
    private let queue: AsyncStream<Work>
    private let queueInput: AsyncStream<Work>.Continuation
    private let stopSignal: AsyncStream<Void>
    private let stopInput: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - redirector: the pod's redirector; nil when it could not be set up (scale-down then stays off).
    ///   - wakeGroup: the wake group this container belongs to, if any.
    init(id: String, bundle: String, runc: RuncDriver, config: ContainerConfig, node: NodeConfig, netnsPath: String,
         redirector: PodRedirector?, pids: PidIndex, group: any EventLoopGroup, statusBoard: ShimStatusBoard? = nil,
         wakeGroup: WakeGroupMember? = nil, logger: Logger) {
        self.statusBoard = statusBoard
        self.wakeGroup = wakeGroup
        self.id = id
        self.bundle = bundle
        self.runc = runc
        self.config = config
        self.node = node
        self.netnsPath = netnsPath
        self.redirector = redirector
        self.pids = pids
        self.group = group
        var logger = logger
        logger[metadataKey: "container"] = "\(id)"
        self.logger = logger
        let configuration = ContainerLifecycle.Configuration(
            scaleDownDuration: config.scaleDownDuration ?? .zero,
            checkpointingEnabled: !config.disableCheckpointing,
            openConnectionsCountAsActivity: node.openConnectionsAreActivity,
            preDump: config.preDump,
            wakesGroup: wakeGroup != nil)
        state = Mutex(State(lifecycle: ContainerLifecycle(configuration: configuration)))
        (queue, queueInput) = AsyncStream.makeStream(of: Work.self)
        (stopSignal, stopInput) = AsyncStream.makeStream(of: Void.self)
    }

    /// Where checkpoint images of this container go: `<state dir>/i/<containerd namespace>/<id>`
    /// (container ids are unique only within a containerd namespace; ``NodeLayout``).
    var imagesDirectory: String { node.layout.imageDirectory(containerdNamespace: namespace, containerID: id) }

    /// The containerd namespace (the last component of runc's root).
    private var namespace: String { String(runc.root.split(separator: "/").last ?? "default") }

    /// Connects the driver to its container (once, right after create).
    func attach(_ container: ShimContainer) {
        state.withLock { $0.container = container }
    }

    // MARK: facts

    /// Applies `event` and waits until its actions were carried out.
    func feed(_ event: Event) async {
        let actions = state.withLock { $0.lifecycle.event(event) }
        await enqueueAndWait(actions)
    }

    /// Queues `actions` for the consumer and waits until they were carried out (at once when the
    /// driver stopped).
    private func enqueueAndWait(_ actions: [Action]) async {
        guard !actions.isEmpty else { return }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if case .terminated = queueInput.yield(Work(actions: actions, done: done)) { done.resume() }
        }
    }

    /// Applies `event` without waiting (from the consumer itself: waiting there would deadlock).
    private func feedInline(_ event: Event) async {
        let actions = state.withLock { $0.lifecycle.event(event) }
        for action in actions { await perform(action) }
    }

    /// The current phase.
    var phase: ContainerLifecycle.Phase { state.withLock { $0.lifecycle.phase } }

    /// Whether the process runs now (not scaled down, not being dumped or woken).
    var processRuns: Bool { state.withLock { $0.lifecycle.phase == .running || $0.lifecycle.phase == .created } }

    /// The pid to show containerd.
    var pid: Int32? { state.withLock { $0.lifecycle.pid } }

    /// The first connection of the activator needs the application: returns once it runs, throws
    /// when it cannot come back.
    func connectionNeedsApplication() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let (actions, resume) = state.withLock { s -> ([Action], Result<Void, any Error>?) in
                let actions = s.lifecycle.event(.connectionArrived)
                if actions.contains(.holdConnection) {
                    s.heldConnections.append(continuation)
                    return (actions, nil)
                }
                if actions.contains(.forwardConnection) { return (actions, .success(())) }
                return (actions, .failure(ScaleDownError(description: "container \(id) is not running (\(s.lifecycle.phase))")))
            }
            enqueueFromCaller(actions)
            if let resume { continuation.resume(with: resume) }
        }
    }

    /// Another member of the wake group asks the container to come back: returns the lifecycle's
    /// answer when it does not wait for a wake, nil once a wake it waited for brought it back.
    /// - Throws: ``ScaleDownError`` when the container cannot come back.
    func groupWakeRequested() async throws -> ContainerLifecycle.GroupWakeAnswer? {
        var immediate: ContainerLifecycle.GroupWakeAnswer?
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let actions = state.withLock { s -> [Action] in
                let actions = s.lifecycle.event(.groupWakeRequested)
                if actions.contains(.holdConnection) { s.heldConnections.append(continuation) }
                return actions
            }
            for action in actions {
                if case .answerGroupWake(let answer) = action { immediate = answer }
            }
            enqueueFromCaller(actions)
            if !actions.contains(.holdConnection) { continuation.resume() }
        }
        return immediate
    }

    /// Queues a caller's actions for the consumer, except `wakeGroup`, which is carried out at once
    /// (it only starts the calls to the other members; they must not wait for this restore).
    private func enqueueFromCaller(_ actions: [Action]) {
        if actions.contains(.wakeGroup) { wakeGroup?.requestWake() }
        let queued = actions.filter { $0 != .wakeGroup }
        if !queued.isEmpty { queueInput.yield(Work(actions: queued, done: nil)) }
    }

    /// An exec is about to start: returns once the container runs (restoring it first if it is
    /// scaled down); the exec then pins it until ``execEnded(_:)``.
    func execNeedsApplication(_ execID: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let (actions, resume) = state.withLock { s -> ([Action], Result<Void, any Error>?) in
                let actions = s.lifecycle.event(.execStarted(id: execID))
                if actions.contains(.holdExec(id: execID)) {
                    s.heldExecs[execID] = continuation
                    return (actions, nil)
                }
                if actions.contains(.startExec(id: execID)) { return (actions, .success(())) }
                return (actions, .failure(ScaleDownError(description: "container \(id) is not running (\(s.lifecycle.phase))")))
            }
            enqueueFromCaller(actions)
            if let resume { continuation.resume(with: resume) }
        }
    }

    /// An exec process ended (or failed to start after ``execNeedsApplication(_:)``).
    func execEnded(_ execID: String) async {
        await feed(.execEnded(id: execID, now: Self.now()))
    }

    /// Kill: applies the signal to the machine. Returns true when the caller must signal the
    /// running process now (runc kill with its own flags); otherwise the machine handled it
    /// (stopped a scaled-down container, or deferred the signal until an operation ends).
    func killRequested(signal: Int32) async -> Bool {
        let actions = state.withLock { $0.lifecycle.event(.killRequested(signal: signal)) }
        let rest = actions.filter { $0 != .signalProcess(signal: signal) }
        await enqueueAndWait(rest)
        return rest.count != actions.count
    }

    /// Asks the loops of ``run()`` to end (after Delete).
    func stop() {
        let held = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.stopped = true
            let held = s.heldConnections + Array(s.heldExecs.values)
            s.heldConnections = []
            s.heldExecs = [:]
            s.container = nil
            return held
        }
        for continuation in held { continuation.resume(throwing: ScaleDownError(description: "container \(id) was deleted")) }
        wakeGroup?.leave()
        stopInput.yield()
        stopInput.finish()
    }

    // MARK: run

    /// Carries out queued actions, runs the idle timer and the pod activator, until ``stop()``.
    func run() async {
        await withTaskGroup(of: Void.self) { tasks in
            // The consumer is not cancelled: it drains the queue after stop(), so no caller waits forever.
            tasks.addTask { [self] in
                for await work in queue {
                    for action in work.actions { await perform(action) }
                    work.done?.resume()
                }
            }
            await withTaskGroup(of: Void.self) { loops in
                loops.addTask { [self] in await idleTimer() }
                loops.addTask { [self] in await serveActivator() }
                loops.addTask { [self] in await lazyPagesWatcher() }
                if let wakeGroup { loops.addTask { await wakeGroup.run() } }
                for await _ in stopSignal { break }
                loops.cancelAll()
            }
            queueInput.finish()
        }
        discardRestoreSide()
        try? redirectOff()
        logger.debug("scale-down driver stopped")
    }

    /// Feeds `idleDeadlineReached` (or `preDumpDeadlineReached`) when the armed deadline passed,
    /// with the ports' activity. A pre-dump it starts runs on the action consumer; this loop
    /// waits for it, so an idle deadline that passes meanwhile is fed when the pre-dump ended.
    private func idleTimer() async {
        while !Task.isCancelled {
            let (deadline, preDumpDeadline, ready) = state.withLock {
                ($0.lifecycle.idleDeadline, $0.lifecycle.preDumpDeadline, $0.activator != nil)
            }
            let now = Self.now()
            if let deadline, ready, now >= deadline {
                let (last, open) = activity()
                await feed(.idleDeadlineReached(lastActivity: last, openConnections: open, now: Self.now()))
                continue
            }
            if let preDumpDeadline, ready, now >= preDumpDeadline {
                let (last, open) = activity()
                await feed(.preDumpDeadlineReached(lastActivity: last, openConnections: open, now: Self.now()))
                continue
            }
            var pause = Duration.milliseconds(250)
            for next in [deadline, preDumpDeadline].compactMap({ $0 }) where next > now {
                pause = min(pause, now.duration(to: next))
            }
            try? await Task.sleep(for: pause)
        }
    }

    /// The newest activity stamp and the open connections over the container's ports.
    private func activity() -> (ZPInstant?, Int) {
        guard let redirector else { return (nil, 0) }
        let ports = state.withLock { $0.ports }
        var last: ZPInstant?
        var open = 0
        for port in ports {
            guard let a = try? redirector.activity(port: port) else { continue }
            open += a.openConnections
            if let stamp = a.lastActivity {
                let instant = Self.instant(stamp)
                if last.map({ instant > $0 }) ?? true { last = instant }
            }
        }
        return (last, open)
    }

    /// Waits for the running process, finds its ports, sets up the activator and serves until cancelled.
    private func serveActivator() async {
        guard let redirector else {
            await feed(.redirectUnavailable(reason: "the pod's redirector could not be set up"))
            return
        }
        var ports = config.ports
        var delay = Duration.milliseconds(100)
        while ports.isEmpty && !Task.isCancelled {
            if let pid = state.withLock({ $0.lifecycle.phase == .running ? $0.lifecycle.pid : nil }) {
                ports = PortDiscovery.listeningPorts(ofTreeAt: pid)
                if !ports.isEmpty { break }
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
        guard !Task.isCancelled else { return }
        let configuration = ActivatorConfiguration(
            probeDetection: !config.disableProbeDetection, probeBufferSize: config.probeBufferSize,
            connectTimeout: config.connectTimeout)
        let log = logger
        let activator: PodActivator
        do {
            activator = try await PodActivator.make(
                namespacePath: FilePath(netnsPath), ports: ports, redirector: redirector, configuration: configuration,
                group: group,
                events: { event in
                    switch event {
                    case .restoreFailed(let message, _): log.warning("activator: restore failed: \(message)")
                    case .redirectDisableFailed(let port, let message):
                        log.warning("activator: redirect off failed for port \(port): \(message)")
                    case .connectionFinished(let report):
                        if case .probeAnswered(let kind) = report.outcome { log.debug("activator answered probe \(kind)") }
                    default: break
                    }
                },
                restore: { [weak self] in
                    guard let self else { throw ScaleDownError(description: "container deleted") }
                    try await self.connectionNeedsApplication()
                })
        } catch {
            logger.warning("scale-down is off: \(error)")
            await feed(.redirectUnavailable(reason: "\(error)"))
            return
        }
        state.withLock {
            $0.activator = activator
            $0.ports = ports
        }
        logger.info("scale-down armed", metadata: ["ports": "\(ports)", "netns": "\(netnsPath)"])
        do {
            try await activator.run()
        } catch {
            if !Task.isCancelled { logger.warning("activator stopped: \(error)") }
        }
    }

    // MARK: actions

    private func perform(_ action: Action) async {
        switch action {
        case .armIdleTimer, .cancelIdleTimer, .armPreDumpTimer:
            break  // the idle timer loop reads the machine's deadline
        case .enableRedirect:
            let activator = state.withLock { $0.activator }
            do {
                try activator?.applicationScaledDown()
            } catch {
                logger.warning("redirect on failed: \(error)")
                await feedInline(.redirectUnavailable(reason: "\(error)"))
            }
        case .disableRedirect:
            do { try redirectOff() } catch { logger.warning("redirect off failed: \(error)") }
        case .startCheckpoint, .startIncrementalCheckpoint:
            if let untrusted = await finishServingLazyPages() {
                // The last lazy restore's daemon ended too early: the process was killed, not dumped.
                await feedInline(.checkpointFailed(reason: untrusted, now: Self.now()))
                return
            }
            await checkpoint(onPreDump: action == .startIncrementalCheckpoint)
            // (After a failed incremental dump the plain one above prepared it already.)
            await prepareRestoreIfScaledDown()
        case .startPreDump:
            if let untrusted = await finishServingLazyPages() {
                await feedInline(.preDumpFailed(reason: untrusted))
                return
            }
            await preDump()
        case .startScaleDownKill:
            do {
                try await runc.kill(id: id, bundle: bundle, signal: UInt32(SIGKILL), all: true)
            } catch {
                logger.warning("scale-down kill failed: \(error)")
            }
        case .startRestore:
            await restore()
        case .startFullRestore:
            await restoreFully()
        case .startColdStart:
            await coldStart()
        case .holdConnection, .forwardConnection, .refuseConnection, .answerProbe, .holdExec, .startExec, .rejectExec,
             .deferSignal, .suppressExit, .answerGroupWake:
            break  // settled where the event was applied, or nothing to do
        case .wakeGroup:
            wakeGroup?.requestWake()  // normally carried out by the caller already (enqueueFromCaller)
        case .releaseHeldConnections, .startHeldExecs:
            let held = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                let held = s.heldConnections + Array(s.heldExecs.values)
                s.heldConnections = []
                s.heldExecs = [:]
                return held
            }
            for continuation in held { continuation.resume() }
        case .failHeldConnections, .failHeldExecs:
            let held = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                let held = s.heldConnections + Array(s.heldExecs.values)
                s.heldConnections = []
                s.heldExecs = [:]
                return held
            }
            for continuation in held {
                continuation.resume(throwing: ScaleDownError(description: "container \(id) could not be brought back"))
            }
        case .signalProcess(let signal):
            do {
                try await runc.kill(id: id, bundle: bundle, signal: UInt32(signal), all: false)
            } catch {
                logger.warning("deferred signal \(signal) failed: \(error)")
            }
        case .emitStatus(let status, let duration, let reason):
            var metadata: Logger.Metadata = ["status": "\(status)"]
            if let duration { metadata["duration"] = "\(Self.milliseconds(duration))" }
            if let reason { metadata["reason"] = "\(reason)" }
            logger.info("status \(status)", metadata: metadata)
            publishStatus(status, duration: duration, reason: reason)
        case .reportExit(let status):
            let container = state.withLock { $0.container }
            await container?.recordInitExitFromDriver(status: ExitStatus(code: UInt32(bitPattern: status), exitedAt: SystemClock.realtimeNanoseconds()))
        case .cleanupImages:
            cleanupImagesAfterLazyPages()
        case .cleanupAll:
            discardRestoreSide()
            removeImages()
            try? redirectOff()
        }
    }

    /// Hands a status change to the status board (the manager's view): the phase and pid as they are
    /// now, and the checkpoint or restore it reports.
    private func publishStatus(_ status: ContainerLifecycle.StatusPhase, duration: Duration?, reason: String?) {
        guard let statusBoard else { return }
        let (phase, pid) = state.withLock { ($0.lifecycle.phase, $0.lifecycle.pid) }
        let event: StatusAPI.Event?
        switch status {
        case .scaledDown: event = duration.map { .checkpointFinished(duration: $0) }
        case .running: event = duration.map { .restoreFinished(duration: $0) }
        case .checkpointFailed: event = .checkpointFailed(reason: reason ?? "checkpoint failed")
        case .restoreFailed: event = .restoreFailed(reason: reason ?? "restore failed")
        case .stopping: event = nil
        }
        statusBoard.update(id: id, phase: phase, pid: pid, event: event)
    }

    private func redirectOff() throws {
        guard let redirector else { return }
        for port in state.withLock({ $0.ports }) { try redirector.setRedirect(port: port, enabled: false) }
    }

    /// Removes the checkpoint images (and the pre-dump inside them), or everything but the
    /// pre-dump when `keepingPreDump`.
    private func removeImages(keepingPreDump: Bool = false) {
        guard keepingPreDump else {
            try? FileManager.default.removeItem(atPath: imagesDirectory)
            _ = rmdir(node.layout.imageDirectory(containerdNamespace: namespace))  // only when empty
            return
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: imagesDirectory)) ?? []
        for entry in entries where entry != Self.preDumpDirectoryName {
            try? FileManager.default.removeItem(atPath: imagesDirectory + "/" + entry)
        }
    }

    private var runcContainer: RuncContainer { RuncContainer(id: id, runcRoot: FilePath(runc.root)) }

    /// The pre-dump image folder, inside the checkpoint's so that one removal takes both.
    static let preDumpDirectoryName = "pre-dump"

    /// The final checkpoint. `onPreDump`: a DUMP with memory tracking and the pre-dump as its
    /// parent, so only pages dirtied since are written; if that fails, one plain dump follows
    /// before the checkpoint counts as failed. The logged time is this checkpoint's alone.
    private func checkpoint(onPreDump: Bool) async {
        let images = imagesDirectory
        if onPreDump {
            removeImages(keepingPreDump: true)
        } else {
            removeImages()
        }
        let checkpointer = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(node.criuPath)))
        let container = runcContainer
        // A plain dump after a failed incremental one continues its clock.
        let start = state.withLock { s in
            let start = s.checkpointStart ?? ContinuousClock.now
            s.checkpointStart = onPreDump ? start : nil
            return start
        }
        var options = ContainerCheckpointOptions()
        if onPreDump {
            options.criu.parentImages = Self.preDumpDirectoryName
            options.criu.trackMemory = true
        }
        do {
            try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
            let result = try await NIOThreadPool.singleton.runIfActive { [options] in
                try checkpointer.checkpoint(container, imagesDir: FilePath(images), options: options)
            }
            state.withLock { $0.checkpointStart = nil }
            let total = ContinuousClock.now - start
            var metadata: Logger.Metadata = ["criu": "\(result.dump.timings)"]
            if let stats = result.dump.stats { metadata["stats"] = "\(stats)" }
            if onPreDump { metadata["parent"] = "\(Self.preDumpDirectoryName)" }
            logger.info("checkpointing done in \(Self.milliseconds(total))", metadata: metadata)
            await feedInline(.checkpointFinished(duration: total))
        } catch {
            // The lifecycle answers a failed incremental dump with one plain dump (cleanupImages, startCheckpoint).
            logger.warning(onPreDump ? "incremental checkpoint failed: \(error)" : "checkpoint failed: \(error)")
            await feedInline(.checkpointFailed(reason: "\(error)", now: Self.now()))
            if !onPreDump { state.withLock { $0.checkpointStart = nil } }
        }
    }

    /// Pre-dumps the running container's memory into `<images>/pre-dump` (replacing an older
    /// pre-dump); the container keeps running. Where the kernel cannot track dirty memory, the
    /// checkpointer says so without running CRIU's pre-dump, and pre-dumps stay off.
    private func preDump() async {
        let dir = imagesDirectory + "/" + Self.preDumpDirectoryName
        let checkpointer = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(node.criuPath)))
        let container = runcContainer
        let start = ContinuousClock.now
        do {
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let result = try await NIOThreadPool.singleton.runIfActive {
                try checkpointer.preDump(container, imagesDir: FilePath(dir))
            }
            var metadata: Logger.Metadata = ["criu": "\(result.timings)"]
            if let stats = result.stats { metadata["stats"] = "\(stats)" }
            logger.info("pre-dump done in \(Self.milliseconds(ContinuousClock.now - start))", metadata: metadata)
            await feedInline(.preDumpFinished)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            _ = rmdir(imagesDirectory)  // only when empty
            logger.warning("pre-dump failed; checkpoints of this container are plain dumps from now on: \(error)")
            await feedInline(.preDumpFailed(reason: "\(error)"))
        }
    }

    private func restore() async {
        guard let container = state.withLock({ $0.container }) else { return }
        let prepared = state.withLock { s -> RestorePreparation? in
            defer { s.restoreSide.prepared = nil }
            return s.restoreSide.prepared
        }
        let start = ContinuousClock.now
        var restored: ContainerRestoreResult?
        var lazy = false
        var usedPrepared = false
        if let prepared {
            if prepared.lazy && prepared.daemonExited() {
                let reason = "criu lazy-pages (pid \(prepared.daemonPID ?? 0)) exited before the restore"
                logger.warning("lazy restore: \(reason); full restore from the same images")
                prepared.discard()
                await feedInline(.lazyRestoreFailed(reason: reason))
                return
            }
            do {
                usedPrepared = true
                restored = try await NIOThreadPool.singleton.runIfActive { try prepared.run() }
                lazy = prepared.lazy
                if lazy {
                    // The daemon pushes the remaining pages now; the images stay until it exits.
                    state.withLock {
                        $0.restoreSide.serving = prepared
                        $0.restoreSide.untrusted = nil
                    }
                } else {
                    prepared.discard()
                }
            } catch {
                prepared.discard()
                if !prepared.lazy {
                    logger.warning("restore failed: \(error)")
                    await feedInline(.restoreFailed(reason: "\(error)"))
                    return
                }
                logger.warning("lazy restore failed: \(error); full restore from the same images")
                await feedInline(.lazyRestoreFailed(reason: "\(error)"))
                return
            }
        }
        let result: ContainerRestoreResult
        if let restored {
            result = restored
        } else {
            do {
                result = try await fullRestore(container)
            } catch {
                logger.warning("restore failed: \(error)")
                await feedInline(.restoreFailed(reason: "\(error)"))
                return
            }
        }
        await finishRestore(result, into: container, since: start, lazy: lazy, prepared: usedPrepared && restored != nil)
    }

    /// The lifecycle's `startFullRestore`: after a lazy restore failed, a full restore from the
    /// same images with a worker of its own.
    private func restoreFully() async {
        guard let container = state.withLock({ $0.container }) else { return }
        let start = ContinuousClock.now
        do {
            let result = try await fullRestore(container)
            await finishRestore(result, into: container, since: start, lazy: false, prepared: false)
        } catch {
            logger.warning("restore failed: \(error)")
            await feedInline(.restoreFailed(reason: "\(error)"))
        }
    }

    /// Adopts the restored init and reports it to the lifecycle (then an exit that came first).
    private func finishRestore(_ result: ContainerRestoreResult, into container: ShimContainer, since start: ContinuousClock.Instant,
                          lazy: Bool, prepared: Bool) async {
        let total = ContinuousClock.now - start
        logger.info("restored process: \(result.pid) in \(Self.milliseconds(total))",
                    metadata: ["criu": "\(result.restore.timings)", "lazy": "\(lazy)",
                               "prepared": "\(prepared)"])
        await container.adoptInit(pid: result.pid)
        await feedInline(.restoreFinished(pid: result.pid, duration: total, now: Self.now()))
        if let early = pids.register(result.pid, to: container) {
            await feedInline(.processExited(pid: result.pid, status: Int32(bitPattern: early.code)))
        }
    }

    /// A full restore with a worker started now (nothing prepared, or the lazy restore failed).
    private func fullRestore(_ container: ShimContainer) async throws -> ContainerRestoreResult {
        let options = try await restoreOptions(container)
        let checkpointer = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(node.criuPath)))
        let target = runcContainer
        let images = imagesDirectory
        return try await NIOThreadPool.singleton.runIfActive {
            try checkpointer.restore(target, imagesDir: FilePath(images), options: options)
        }
    }

    /// Restore options with the container side of the init's stdio pipes.
    private func restoreOptions(_ container: ShimContainer) async throws -> ContainerRestoreOptions {
        let stdio = await container.initContainerSideStdio()
        var o = ContainerRestoreOptions()
        o.stdio = stdio
        return o
    }

    private func coldStart() async {
        guard let container = state.withLock({ $0.container }) else { return }
        let pidFile = bundle + "/init.pid"
        do {
            try? await runc.delete(id: id, bundle: bundle, force: true)
            let stdio = await container.initRuncStdio()
            try await runc.create(id: id, bundle: bundle, pidFile: pidFile, stdio: stdio)
            guard let bytes = try? Files.read(FilePath(pidFile)),
                  let pid = Int32(String(decoding: bytes, as: UTF8.self).trimmedWhitespace) else {
                throw ScaleDownError(description: "pid file \(pidFile) holds no pid after runc create")
            }
            await container.adoptInit(pid: pid)
            try await runc.start(id: id, bundle: bundle)
            logger.info("cold started process: \(pid)")
            await feedInline(.coldStartFinished(pid: pid, now: Self.now()))
            if let early = pids.register(pid, to: container) {
                await feedInline(.processExited(pid: pid, status: Int32(bitPattern: early.code)))
            }
        } catch {
            logger.error("cold start failed: \(error)")
            await feedInline(.coldStartFailed(reason: "\(error)"))
        }
    }

    // MARK: restore side (docs/decisions/0009-lazy-restore-in-driver.md)

    /// Right after a checkpoint, while scaled down: starts the CRIU worker (and, when lazy restore
    /// applies, the `criu lazy-pages` daemon) for the coming restore, off the connection's path.
    private func prepareRestoreIfScaledDown() async {
        guard let container = state.withLock({ s in
            s.lifecycle.phase == .scaledDown && !s.stopped && s.restoreSide.prepared == nil ? s.container : nil
        }) else { return }
        let images = imagesDirectory
        let criu = node.criuPath
        let mode = node.lazyRestore
        let checkpointer = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(criu)))
        let target = runcContainer
        let start = ContinuousClock.now
        let prepared: RestorePreparation
        let why: String
        do {
            let options = try await restoreOptions(container)
            (prepared, why) = try await NIOThreadPool.singleton.runIfActive { () throws -> (RestorePreparation, String) in
                let bytes = RestorePreparation.pageBytes(inImages: images)
                let size = "\(bytes >> 20) MiB of pages"
                var lazy = mode.restoresLazily(pageBytes: bytes, userfaultfdUsable: true)
                var why = "lazy-restore = \(mode.rawValue), \(size)"
                if lazy && !RestorePreparation.userfaultfdUsable(criuPath: criu) {
                    lazy = false
                    why += ", but CRIU reports no lazy-pages (userfaultfd) support"
                }
                return (try RestorePreparation(checkpointer: checkpointer, container: target, imagesDir: FilePath(images),
                                               options: options, lazy: lazy), why)
            }
        } catch {
            logger.warning("restore not prepared (the restore starts its own worker): \(error)")
            return
        }
        if let reason = prepared.lazyFallbackReason {
            logger.warning("lazy restore not prepared, a full restore is: \(reason)")
        }
        logger.info("restore prepared in \(Self.milliseconds(ContinuousClock.now - start))",
                    metadata: ["lazy": "\(prepared.lazy)", "why": "\(why)",
                               "lazy-pages-pid": "\(prepared.daemonPID.map(String.init) ?? "-")"])
        let stale = state.withLock { s -> Bool in
            guard !s.stopped else { return true }
            s.restoreSide.prepared?.discard()
            s.restoreSide.prepared = prepared
            return false
        }
        if stale { prepared.discard() }
    }

    /// The lifecycle's `cleanupImages`: drops an unused prepared restore, and removes the images
    /// unless a lazy-pages daemon still serves them (then the watcher removes them after it exits).
    private func cleanupImagesAfterLazyPages() {
        let (prepared, deferred) = state.withLock { s -> (RestorePreparation?, Bool) in
            let prepared = s.restoreSide.prepared
            s.restoreSide.prepared = nil
            guard s.restoreSide.serving != nil || s.restoreSide.settling else { return (prepared, false) }
            s.restoreSide.cleanupDeferred = true
            return (prepared, true)
        }
        prepared?.discard()
        if !deferred { removeImages() }
    }

    /// Notices when the daemon of a lazy restore has finished, checks how it ended and removes the
    /// images then.
    private func lazyPagesWatcher() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            let finished = state.withLock { s -> RestorePreparation? in
                guard let serving = s.restoreSide.serving, serving.daemonExited() else { return nil }
                s.restoreSide.serving = nil
                s.restoreSide.settling = true
                return serving
            }
            guard let finished else { continue }
            _ = await settleLazyPages(finished, killedBusy: false)
        }
    }

    /// Before a checkpoint: waits until the daemon of the last lazy restore is done (the process
    /// must have all its pages before it is dumped) and its images are gone. Kills a daemon that
    /// is still busy after 60 s (then the process lacks pages: it is killed too).
    /// - Returns: why the process was killed instead, when its daemon ended too early; nil when
    ///   the checkpoint may go on.
    private func finishServingLazyPages() async -> String? {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let (taken, busy, wait) = state.withLock { s -> (RestorePreparation?, Bool, Bool) in
                if let serving = s.restoreSide.serving {
                    let exited = serving.daemonExited()
                    guard exited || ContinuousClock.now >= deadline else { return (nil, false, true) }
                    s.restoreSide.serving = nil
                    s.restoreSide.settling = true
                    return (serving, !exited, false)
                }
                return (nil, false, s.restoreSide.settling)
            }
            if let taken {
                if busy {
                    logger.warning("lazy restore: criu lazy-pages (pid \(taken.daemonPID ?? 0)) still busy after 60 s: killed")
                    taken.discard()
                }
                return await settleLazyPages(taken, killedBusy: busy)
            }
            if !wait { return state.withLock { $0.restoreSide.untrusted } }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// After the daemon of a lazy restore ended (the caller took it out of `serving` and set
    /// `settling`): finds out how it ended; when it did not finish its work, the restored process
    /// runs on zero-filled pages, so its container's processes are killed (the task exits, the
    /// orchestrator restarts it). Then removes the images if that was asked meanwhile and clears
    /// `settling`.
    /// - Parameter killedBusy: the caller killed the daemon because it was still busy.
    /// - Returns: why the processes were killed; nil when the daemon finished cleanly.
    private func settleLazyPages(_ serving: RestorePreparation, killedBusy: Bool) async -> String? {
        let daemonPID = serving.daemonPID ?? 0
        let (clean, how) = await lazyPagesEnd(of: serving, killedBusy: killedBusy)
        var untrusted: String?
        if clean {
            logger.info("lazy restore: criu lazy-pages (pid \(daemonPID)) finished", metadata: ["end": "\(how)"])
        } else if !state.withLock({ $0.stopped }) {
            let reason = "criu lazy-pages (pid \(daemonPID)) ended before serving every page (\(how)): "
                + "the restored process of container \(id) runs on zero-filled memory"
            untrusted = reason
            logger.error("lazy restore: \(reason); killing the container's processes",
                         metadata: ["lazy-pages-pid": "\(daemonPID)", "end": "\(how)"])
            state.withLock { $0.restoreSide.untrusted = reason }
            publishStatus(.restoreFailed, duration: nil, reason: reason)
            do {
                try await runc.kill(id: id, bundle: bundle, signal: UInt32(SIGKILL), all: true)
            } catch {
                logger.error("lazy restore: killing the untrusted processes of container \(id) failed: \(error)")
            }
        }
        serving.discard()
        let remove = state.withLock { s -> Bool in
            defer { s.restoreSide.cleanupDeferred = false }
            return s.restoreSide.cleanupDeferred
        }
        if remove { removeImages() }
        state.withLock { $0.restoreSide.settling = false }
        return untrusted
    }

    /// How the daemon of `serving` ended, from the first source that knows: its own wait status
    /// (the preparation reaped it), the shim reaper's (kept in ``PidIndex``: it arrives a moment
    /// after the reap, so it is polled for 2 s), else CRIU's `lazy-pages.log` (a transfer summary
    /// for every process it took on). Clean means exit code 0, or a complete log.
    private func lazyPagesEnd(of serving: RestorePreparation, killedBusy: Bool) async -> (clean: Bool, how: String) {
        if killedBusy { return (false, "still busy after 60 s, killed by the shim") }
        if let end = serving.daemonTermination { return (end.isClean, "\(end), reaped by the driver") }
        if let pid = serving.daemonPID {
            let deadline = ContinuousClock.now + .seconds(2)
            while true {
                if let exit = pids.takeExit(of: pid, notBefore: serving.daemonStartedAt) {
                    let how = exit.code > 128 ? "signal \(exit.code - 128)" : "exit code \(exit.code)"
                    return (exit.code == 0, how + ", reaped by the shim's reaper")
                }
                if ContinuousClock.now >= deadline || Task.isCancelled { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        if let log = serving.daemonLog, LazyPagesDaemon.logShowsEveryProcessServed(log) {
            return (true, "exit status unknown; its log has a transfer summary for every process")
        }
        return (false, "exit status unknown; its log lacks a transfer summary")
    }

    /// Releases a prepared restore and a serving daemon (delete, driver stop).
    private func discardRestoreSide() {
        let (prepared, serving) = state.withLock { s -> (RestorePreparation?, RestorePreparation?) in
            defer {
                s.restoreSide.prepared = nil
                s.restoreSide.serving = nil
                s.restoreSide.cleanupDeferred = false
            }
            return (s.restoreSide.prepared, s.restoreSide.serving)
        }
        prepared?.discard()
        serving?.discard()
    }

    // MARK: clock

    /// CLOCK_MONOTONIC now, the clock of the eBPF activity stamps.
    static func now() -> ZPInstant { instant(SystemClock.monotonicNow()) }

    static func instant(_ d: Duration) -> ZPInstant {
        let (s, atto) = d.components
        return ZPInstant(nanoseconds: UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto / 1_000_000_000)))
    }

    static func milliseconds(_ d: Duration) -> String {
        "\(ZPSystem.milliseconds(d)) ms"
    }
}
