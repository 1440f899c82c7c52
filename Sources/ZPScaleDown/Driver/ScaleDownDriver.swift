import Logging
import Synchronization
import ZPCore

/// The scale-to-zero driver of one container (decisions 0007, 0017, 0018).
///
/// Owns the container's ``ContainerLifecycle`` and its ``RestoreSupervision`` behind one `Mutex`.
/// Every fact is applied under the lock with `step(_:)`; the caller's answer (hold, forward or
/// refuse a connection, start, hold or reject an exec, signal now or defer) is given under that
/// lock, and the effects are carried out after it: `wakeGroup` at once by the caller, everything
/// else in order by ONE consumer task (``run()``), which feeds completions straight back. The
/// idle and pre-dump timers are real timers armed and cancelled by the lifecycle's orders.
///
/// What it commands sits behind three protocols (``ScaleDownContainerControl``,
/// ``ScaleDownCheckpoints``, ``ScaleDownRedirect``) and two sinks (``ScaleDownStatusSink``,
/// ``ScaleDownWakeGroup``); time comes from a ``ScaleDownClock``. Nothing here needs root.
public final class ScaleDownDriver: Sendable {
    typealias Event = ContainerLifecycle.Event
    typealias Effect = ContainerLifecycle.Effect
    typealias Supervision = RestoreSupervision<any PreparedRestore>

    /// What the driver needs to know about the container beyond its lifecycle configuration.
    public struct Settings: Sendable {
        /// The lifecycle's settings (scale-down duration, checkpointing, pre-dump, wake group).
        public var lifecycle: ContainerLifecycle.Configuration
        /// The application's ports from `ports-map`; empty: found on the running process.
        public var ports: [UInt16]
        /// The first pause between two port discoveries; it doubles up to ``portDiscoveryMaxPause``.
        public var portDiscoveryPause: Duration
        /// The longest pause between two port discoveries.
        public var portDiscoveryMaxPause: Duration
        /// How often a serving lazy-pages daemon is looked at.
        public var daemonPollInterval: Duration
        /// How long a checkpoint waits for a lazy-pages daemon that still serves pages.
        public var busyDaemonLimit: Duration
        /// How long a container counts as active after listener pressure was seen (a handshake
        /// dropped or answered with a SYN cookie): the kernel accepts a cookie's completion for
        /// two minutes, and its client retransmits with backoff, up to a minute apart.
        public var listenerPressureHold: Duration
        /// How long a serving lazy-pages daemon may make no progress before it is taken for hung.
        public var daemonStallLimit: Duration

        /// Settings.
        /// - Parameters:
        ///   - lifecycle: the lifecycle's settings.
        ///   - ports: configured ports; empty to discover them.
        ///   - portDiscoveryPause: first pause between discoveries (100 ms).
        ///   - portDiscoveryMaxPause: longest pause (2 s).
        ///   - daemonPollInterval: lazy-pages daemon poll (50 ms).
        ///   - busyDaemonLimit: a checkpoint's wait for a busy daemon (60 s).
        ///   - listenerPressureHold: how long listener pressure keeps the container active (120 s).
        ///   - daemonStallLimit: a serving daemon without progress this long is hung (10 s).
        public init(
            lifecycle: ContainerLifecycle.Configuration,
            ports: [UInt16] = [],
            portDiscoveryPause: Duration = .milliseconds(100),
            portDiscoveryMaxPause: Duration = .seconds(2),
            daemonPollInterval: Duration = .milliseconds(50),
            busyDaemonLimit: Duration = .seconds(60),
            listenerPressureHold: Duration = .seconds(120),
            daemonStallLimit: Duration = .seconds(10)
        ) {
            self.lifecycle = lifecycle
            self.ports = ports
            self.portDiscoveryPause = portDiscoveryPause
            self.portDiscoveryMaxPause = portDiscoveryMaxPause
            self.daemonPollInterval = daemonPollInterval
            self.busyDaemonLimit = busyDaemonLimit
            self.listenerPressureHold = listenerPressureHold
            self.daemonStallLimit = daemonStallLimit
        }
    }

    /// One batch of effects and the caller waiting for them, if any.
    struct Work: Sendable {
        var effects: [Effect]
        var done: CheckedContinuation<Void, Never>?
    }

    /// The two timers of the lifecycle; a generation number tells a current firing from a stale one.
    struct Timers: Sendable {
        var idle: TimerOrder?
        var preDump: TimerOrder?
        var generation: UInt64 = 0
        /// Timers that fired before the activator existed: fired again once it does.
        var firedEarly: [TimerOrder] = []
    }

    enum TimerKind: Sendable, Hashable {
        case idle, preDump
    }

    struct TimerOrder: Sendable, Hashable {
        var kind: TimerKind
        var deadline: ZPInstant
        var generation: UInt64
    }

    struct State: Sendable {
        var lifecycle: ContainerLifecycle
        var restoreSide: Supervision
        var activator: (any ScaleDownActivator)?
        var ports: [UInt16] = []
        /// The process was idle before it started here (``started(pid:alreadyIdle:)``): arming the
        /// activator does not start its scale-down window over.
        var startedIdle = false
        var heldConnections: [HeldConnection] = []
        var heldExecs: [String: CheckedContinuation<Void, any Error>] = [:]
        var stopped = false
        /// When the checkpoint of this scale-down started, kept over the plain retry that follows
        /// a failed incremental one.
        var checkpointStart: ZPInstant?
        /// The checkpoint waiting for a lazy-pages daemon (``RestoreSupervision``).
        var checkpointWait: CheckedContinuation<String?, Never>?
        var timers = Timers()
        /// The listener pressure counter at the last idle or pre-dump deadline.
        var listenerPressure: UInt64?
        /// The deadline at which the counter was last seen grown.
        var listenerPressureSeen: ZPInstant?
    }

    /// The container id.
    public let id: String
    let settings: Settings
    let control: any ScaleDownContainerControl
    let checkpoints: any ScaleDownCheckpoints
    let redirect: (any ScaleDownRedirect)?
    let status: (any ScaleDownStatusSink)?
    let wakeGroup: (any ScaleDownWakeGroup)?
    let clock: any ScaleDownClock
    let logger: Logger
    let state: Mutex<State>
    let queue: AsyncStream<Work>
    let queueInput: AsyncStream<Work>.Continuation
    let timerOrders: AsyncStream<TimerOrder>
    let timerInput: AsyncStream<TimerOrder>.Continuation
    let stopSignal: AsyncStream<Void>
    let stopInput: AsyncStream<Void>.Continuation
    /// Wakes the lazy-pages and listener watch after a restore (it idles, without a timer, while
    /// there is nothing to watch: 200 scaled-down pods polled 20 times a second each).
    let watchWake: AsyncStream<Void>
    let watchWakeInput: AsyncStream<Void>.Continuation

    /// A driver for container `id`; ``run()`` starts it.
    /// - Parameters:
    ///   - id: the container id (logs, reasons).
    ///   - settings: lifecycle settings and ports.
    ///   - control: runc and the container's processes.
    ///   - checkpoints: CRIU, images, prepared restores.
    ///   - redirect: the pod's redirect; nil when it could not be set up (scale-down stays off).
    ///   - status: where status changes go, if anywhere.
    ///   - wakeGroup: the container's wake group membership, if any (`settings.lifecycle.wakesGroup`
    ///     should then be true).
    ///   - clock: `CLOCK_MONOTONIC` (``MonotonicClock``), or a test's clock.
    ///   - logger: the driver's log lines get `container=<id>`.
    public init(
        id: String,
        settings: Settings,
        control: any ScaleDownContainerControl,
        checkpoints: any ScaleDownCheckpoints,
        redirect: (any ScaleDownRedirect)?,
        status: (any ScaleDownStatusSink)? = nil,
        wakeGroup: (any ScaleDownWakeGroup)? = nil,
        clock: any ScaleDownClock = MonotonicClock(),
        logger: Logger
    ) {
        self.id = id
        self.settings = settings
        self.control = control
        self.checkpoints = checkpoints
        self.redirect = redirect
        self.status = status
        self.wakeGroup = wakeGroup
        self.clock = clock
        var logger = logger
        logger[metadataKey: "container"] = "\(id)"
        self.logger = logger
        state = Mutex(
            State(
                lifecycle: ContainerLifecycle(configuration: settings.lifecycle),
                restoreSide: Supervision(
                    containerID: id,
                    busyLimit: settings.busyDaemonLimit,
                    stallLimit: settings.daemonStallLimit
                )
            )
        )
        (queue, queueInput) = AsyncStream.makeStream(of: Work.self)
        (timerOrders, timerInput) = AsyncStream.makeStream(of: TimerOrder.self)
        (stopSignal, stopInput) = AsyncStream.makeStream(of: Void.self)
        (watchWake, watchWakeInput) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: queries

    /// The current phase.
    public var phase: ContainerLifecycle.Phase { state.withLock { $0.lifecycle.phase } }

    /// Whether the process runs now (created or running: not scaled down, not being dumped or woken).
    public var processRuns: Bool {
        state.withLock { $0.lifecycle.phase == .running || $0.lifecycle.phase == .created }
    }

    /// The pid to show containerd.
    public var pid: Int32? { state.withLock { $0.lifecycle.pid } }

    // MARK: facts from callers

    /// The init process was started (task Start): the lifecycle runs, timers are armed.
    /// - Parameter alreadyIdle: the process was idle before it started here (restored from an
    ///   offline migration's checkpoint, decision 0057): its idle period counts as begun one
    ///   scale-down duration ago, so the idle deadline is now and it scales down again as soon as
    ///   its activator is armed, unless traffic came meanwhile. Otherwise the scale-down window
    ///   starts again when the activator is armed (activity before it went unseen).
    public func started(pid: Int32, alreadyIdle: Bool = false) async {
        let now = clock.now()
        let idleSince = alreadyIdle ? now.advanced(by: .zero - settings.lifecycle.scaleDownDuration) : now
        state.withLock { $0.startedIdle = alreadyIdle }
        await feed(.started(pid: pid, now: idleSince))
    }

    /// The reaper saw process `pid` of the container exit with `status` (containerd's: 128 + signal
    /// for a signalled process). The running init's exit is reported (``ScaleDownContainerControl/reportExit(status:)``);
    /// the checkpointed, killed or replaced one's is not. Returns once that was carried out.
    public func processExited(pid: Int32, status: Int32) async {
        await feed(.processExited(pid: pid, status: status))
    }

    /// containerd asked to delete the container: a scaled-down container stops without a restore
    /// and everything it left is removed; a live process is left alone (the caller refuses, as runc
    /// does). Returns once that was carried out.
    public func deleteRequested() async {
        await feed(.deleteRequested)
    }

    /// Applies `event` and waits until its effects were carried out (its answer is not needed).
    func feed(_ event: Event) async {
        let step = state.withLock { $0.lifecycle.step(event) }
        await carryOut(step.effects, waiting: true)
    }

    /// A connection needs the application (the activator's hook): returns once it runs (at once
    /// when it does), throws when it will not come back.
    /// - Throws: ``ScaleDownError`` when the container is not running and will not wake.
    public func connectionNeedsApplication() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let step = state.withLock { s in
                let step = s.lifecycle.step(.connectionArrived)
                if case .holdConnection = step.answer { s.heldConnections.append(.connection(continuation)) }
                return step
            }
            startCarryingOut(step.effects)
            switch step.answer {
            case .holdConnection: break
            case .forwardConnection: continuation.resume()
            case .refuseConnection: continuation.resume(throwing: notRunning())
            case .none, .answerProbe, .answerGroupWake, .startExec, .holdExec, .rejectExec, .signalNow, .deferSignal,
                .suppressExit:
                preconditionFailure("answer \(step.answer) to a connection")
            }
        }
    }

    /// An exec is about to start: returns once the container runs (restoring it first if it is
    /// scaled down); the exec then pins it until ``execEnded(_:)``.
    /// - Throws: ``ScaleDownError`` when the container does not run and will not wake.
    public func execNeedsApplication(_ execID: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let step = state.withLock { s in
                let step = s.lifecycle.step(.execStarted(id: execID))
                if case .holdExec = step.answer { s.heldExecs[execID] = continuation }
                return step
            }
            startCarryingOut(step.effects)
            switch step.answer {
            case .holdExec: break
            case .startExec: continuation.resume()
            case .rejectExec: continuation.resume(throwing: notRunning())
            case .none:
                // The same exec id again while it runs or waits.
                continuation.resume(throwing: ScaleDownError("exec \(execID) of container \(id) was already started"))
            case .holdConnection, .forwardConnection, .refuseConnection, .answerProbe, .answerGroupWake, .signalNow,
                .deferSignal, .suppressExit:
                preconditionFailure("answer \(step.answer) to an exec")
            }
        }
    }

    /// An exec process ended (or failed to start after ``execNeedsApplication(_:)``).
    public func execEnded(_ execID: String) async {
        await feed(.execEnded(id: execID, now: clock.now()))
    }

    /// Kill: applies the signal to the lifecycle and waits for what follows (a scaled-down
    /// container stops without a restore; other signals may wake it).
    /// - Returns: true when the caller must signal the running process now (runc kill with its
    ///   own options); false when the driver took it (stopped, deferred, or signal 0).
    public func killRequested(signal: Int32) async -> Bool {
        let step = state.withLock { $0.lifecycle.step(.killRequested(signal: signal)) }
        await carryOut(step.effects, waiting: true)
        switch step.answer {
        case .signalNow: return true
        case .deferSignal, .none: return false
        case .holdConnection, .forwardConnection, .refuseConnection, .answerProbe, .answerGroupWake, .startExec,
            .holdExec, .rejectExec, .suppressExit:
            preconditionFailure("answer \(step.answer) to a kill")
        }
    }

    /// Another member of the container's wake group asks it to come back.
    /// - Returns: the answer when the container does not wait for a wake of its own (it runs, is
    ///   already coming back, or stopped); nil once the wake it waited for brought it back.
    /// - Throws: ``ScaleDownError`` when it cannot come back.
    public func groupWakeRequested() async throws -> ContainerLifecycle.GroupWakeAnswer? {
        try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<ContainerLifecycle.GroupWakeAnswer?, any Error>) in
            let step = state.withLock { s in
                let step = s.lifecycle.step(.groupWakeRequested)
                if case .holdConnection = step.answer { s.heldConnections.append(.groupWake(continuation)) }
                return step
            }
            startCarryingOut(step.effects)
            switch step.answer {
            case .holdConnection: break
            case .answerGroupWake(let answer): continuation.resume(returning: answer)
            case .none, .forwardConnection, .refuseConnection, .answerProbe, .startExec, .holdExec, .rejectExec,
                .signalNow, .deferSignal, .suppressExit:
                preconditionFailure("answer \(step.answer) to a group wake")
            }
        }
    }

    /// Ends ``run()`` (after Delete): held connections and execs fail, the wake group entry goes,
    /// the restore side is released.
    public func stop() async {
        let (connections, execs, step) = state.withLock { s in
            s.stopped = true
            defer {
                s.heldConnections = []
                s.heldExecs = [:]
            }
            return (s.heldConnections, Array(s.heldExecs.values), s.restoreSide.event(.driverStopped))
        }
        let deleted = ScaleDownError("container \(id) was deleted")
        for held in connections { held.fail(deleted) }
        for continuation in execs { continuation.resume(throwing: deleted) }
        await carryOut(step.effects)
        wakeGroup?.leave()
        stopInput.yield()
        stopInput.finish()
    }

    func notRunning() -> ScaleDownError {
        ScaleDownError("container \(id) is not running (\(phase))")
    }

    // MARK: carrying out

    /// Effects of a caller's event: `wakeGroup` at once (the members' restores run beside this
    /// one), the rest queued for the consumer, in order. Waits for them when `waiting`.
    func carryOut(_ effects: [Effect], waiting: Bool) async {
        let queued = takeImmediate(effects)
        guard !queued.isEmpty else { return }
        guard waiting else {
            queueInput.yield(Work(effects: queued, done: nil))
            return
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if case .terminated = queueInput.yield(Work(effects: queued, done: done)) { done.resume() }
        }
    }

    /// Waits until every effect queued so far was carried out.
    func drain() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            if case .terminated = queueInput.yield(Work(effects: [], done: done)) { done.resume() }
        }
    }

    /// ``carryOut(_:waiting:)`` without waiting, from a synchronous context.
    func startCarryingOut(_ effects: [Effect]) {
        let queued = takeImmediate(effects)
        if !queued.isEmpty { queueInput.yield(Work(effects: queued, done: nil)) }
    }

    private func takeImmediate(_ effects: [Effect]) -> [Effect] {
        if effects.contains(.wakeGroup) { wakeGroup?.requestWake() }
        return effects.filter { $0 != .wakeGroup }
    }

    /// Applies `event` from the consumer itself and carries out its effects right here (waiting
    /// for the queue would deadlock).
    func feedInline(_ event: Event) async {
        let step = state.withLock { $0.lifecycle.step(event) }
        for effect in step.effects { await perform(effect) }
    }

    // MARK: run

    /// Carries out effects, runs the timers, the activator and the lazy-pages watch, until
    /// ``stop()``.
    public func run() async {
        await withTaskGroup(of: Void.self) { tasks in
            // The consumer is not cancelled: it drains the queue after stop(), so no caller waits forever.
            tasks.addTask { [self] in
                for await work in queue {
                    for effect in work.effects { await perform(effect) }
                    work.done?.resume()
                }
            }
            await withTaskGroup(of: Void.self) { loops in
                loops.addTask { [self] in await runTimers() }
                loops.addTask { [self] in await serveActivator() }
                loops.addTask { [self] in await watchLazyPages() }
                if let wakeGroup { loops.addTask { await wakeGroup.run() } }
                for await _ in stopSignal { break }
                loops.cancelAll()
            }
            queueInput.finish()
        }
        let step = state.withLock { $0.restoreSide.event(.driverStopped) }
        await carryOut(step.effects)
        try? redirectOff()
        logger.debug("scale-down driver stopped")
    }
}

/// Something held by the lifecycle as a connection: a connection of the activator, or a wake
/// group member's request (answered "woken", nil, once the container runs).
enum HeldConnection: Sendable {
    case connection(CheckedContinuation<Void, any Error>)
    case groupWake(CheckedContinuation<ContainerLifecycle.GroupWakeAnswer?, any Error>)

    /// The container runs.
    func release() {
        switch self {
        case .connection(let c): c.resume()
        case .groupWake(let c): c.resume(returning: nil)
        }
    }

    /// The container will not come back.
    func fail(_ error: ScaleDownError) {
        switch self {
        case .connection(let c): c.resume(throwing: error)
        case .groupWake(let c): c.resume(throwing: error)
        }
    }
}
