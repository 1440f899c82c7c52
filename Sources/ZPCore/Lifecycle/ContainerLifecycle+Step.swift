// The driver's view of one event: the answer to whoever reported it (decided under the driver's
// lock, given before the lock is released) and the effects to carry out afterwards, in order.
// The split follows async-http-client's HTTPConnectionPool (`Actions.Locked` / `Unlocked`):
// hold/forward/refuse a connection, answer a probe, start/hold/reject an exec, take a kill, drop an
// exit are answers; timers, redirect, checkpoint/restore, releases, status and cleanup are effects.

extension ContainerLifecycle {
    /// What the driver tells the caller of an event. Decided under the lock together with the
    /// state change, so that a hold can never be overtaken by its release.
    public enum Answer: Sendable, Hashable {
        /// Nothing to tell: the caller only waits for the effects (or for nothing).
        case none
        /// Keep the connection (or the wake group member's request) open and unanswered until the
        /// held connections are released or failed.
        case holdConnection
        /// Proxy the connection to the app now: it runs.
        case forwardConnection
        /// Close the connection: the container is not running and will not wake.
        case refuseConnection
        /// Answer the probe from the activator without waking the app.
        case answerProbe
        /// Answer the wake group member at once (the container does not wait for a wake).
        case answerGroupWake(GroupWakeAnswer)
        /// Start the exec process `id` now.
        case startExec(id: String)
        /// Keep the exec `id` waiting until the held execs are started or failed.
        case holdExec(id: String)
        /// Refuse the exec `id`: the container does not run.
        case rejectExec(id: String)
        /// The kill: the caller sends `signal` to the running process now, with its own options
        /// (runc kill, `--all` as requested).
        case signalNow(signal: Int32)
        /// The kill succeeds; `signal` waits for the operation in flight (delivered, or turned
        /// into a stop, when it ends).
        case deferSignal(signal: Int32)
        /// The exit is not the container's (the checkpointed, killed or old process): nothing is
        /// published for it.
        case suppressExit

        /// The same answer as an ``Action`` (`signalNow` is a `signalProcess`); nil for ``none``.
        public var action: Action? {
            switch self {
            case .none: return nil
            case .holdConnection: return .holdConnection
            case .forwardConnection: return .forwardConnection
            case .refuseConnection: return .refuseConnection
            case .answerProbe: return .answerProbe
            case .answerGroupWake(let answer): return .answerGroupWake(answer)
            case .startExec(let id): return .startExec(id: id)
            case .holdExec(let id): return .holdExec(id: id)
            case .rejectExec(let id): return .rejectExec(id: id)
            case .signalNow(let signal): return .signalProcess(signal: signal)
            case .deferSignal(let signal): return .deferSignal(signal: signal)
            case .suppressExit: return .suppressExit
            }
        }
    }

    /// What the driver carries out after releasing the lock, in list order, feeding completions
    /// back as events. The same orders as the ``Action`` cases of the same names.
    public enum Effect: Sendable, Hashable {
        /// ``Action/armIdleTimer(deadline:)``.
        case armIdleTimer(deadline: ZPInstant)
        /// ``Action/cancelIdleTimer``.
        case cancelIdleTimer
        /// ``Action/armPreDumpTimer(deadline:)``.
        case armPreDumpTimer(deadline: ZPInstant)
        /// ``Action/enableRedirect``.
        case enableRedirect
        /// ``Action/disableRedirect``.
        case disableRedirect
        /// ``Action/startCheckpoint``.
        case startCheckpoint
        /// ``Action/startIncrementalCheckpoint``.
        case startIncrementalCheckpoint
        /// ``Action/startPreDump``.
        case startPreDump
        /// ``Action/startScaleDownKill``.
        case startScaleDownKill
        /// ``Action/startRestore``.
        case startRestore
        /// ``Action/startFullRestore``.
        case startFullRestore
        /// ``Action/startColdStart``.
        case startColdStart
        /// ``Action/releaseHeldConnections(count:)``.
        case releaseHeldConnections(count: Int)
        /// ``Action/failHeldConnections(count:)``.
        case failHeldConnections(count: Int)
        /// ``Action/startHeldExecs(ids:)``.
        case startHeldExecs(ids: [String])
        /// ``Action/failHeldExecs(ids:)``.
        case failHeldExecs(ids: [String])
        /// ``Action/signalProcess(signal:)`` for a deferred signal, delivered to the process after
        /// the operation it waited for (not the answer to a kill).
        case signalProcess(signal: Int32)
        /// ``Action/emitStatus(_:duration:reason:)``.
        case emitStatus(StatusPhase, duration: Duration?, reason: String?)
        /// ``Action/reportExit(status:)``.
        case reportExit(status: Int32)
        /// ``Action/cleanupImages``.
        case cleanupImages
        /// ``Action/cleanupAll``.
        case cleanupAll
        /// ``Action/wakeGroup``. Carry it out at once, not behind effects queued earlier.
        case wakeGroup
        /// ``Action/emitDryRun(_:)``.
        case emitDryRun(DryRunDecision)

        /// The same order as an ``Action``.
        public var action: Action {
            switch self {
            case .armIdleTimer(let deadline): return .armIdleTimer(deadline: deadline)
            case .cancelIdleTimer: return .cancelIdleTimer
            case .armPreDumpTimer(let deadline): return .armPreDumpTimer(deadline: deadline)
            case .enableRedirect: return .enableRedirect
            case .disableRedirect: return .disableRedirect
            case .startCheckpoint: return .startCheckpoint
            case .startIncrementalCheckpoint: return .startIncrementalCheckpoint
            case .startPreDump: return .startPreDump
            case .startScaleDownKill: return .startScaleDownKill
            case .startRestore: return .startRestore
            case .startFullRestore: return .startFullRestore
            case .startColdStart: return .startColdStart
            case .releaseHeldConnections(let count): return .releaseHeldConnections(count: count)
            case .failHeldConnections(let count): return .failHeldConnections(count: count)
            case .startHeldExecs(let ids): return .startHeldExecs(ids: ids)
            case .failHeldExecs(let ids): return .failHeldExecs(ids: ids)
            case .signalProcess(let signal): return .signalProcess(signal: signal)
            case .emitStatus(let status, let duration, let reason):
                return .emitStatus(status, duration: duration, reason: reason)
            case .reportExit(let status): return .reportExit(status: status)
            case .cleanupImages: return .cleanupImages
            case .cleanupAll: return .cleanupAll
            case .wakeGroup: return .wakeGroup
            case .emitDryRun(let decision): return .emitDryRun(decision)
            }
        }
    }

    /// One event as the driver carries it out: the caller's answer and the effects.
    public struct Step: Sendable, Hashable {
        /// The answer to whoever reported the event.
        public var answer: Answer
        /// What to carry out after the lock is released, in order.
        public var effects: [Effect]

        /// Creates a step.
        /// - Parameters:
        ///   - answer: the caller's answer.
        ///   - effects: the effects, in order.
        public init(answer: Answer, effects: [Effect]) {
            self.answer = answer
            self.effects = effects
        }

        /// Splits the actions that `event` returned into the answer (at most one: more is a bug of
        /// the state machine) and the effects, keeping their order.
        /// - Parameters:
        ///   - event: the event the actions answer; a `signalProcess` answers a `killRequested`
        ///     (the caller signals now) and is a deferred delivery after any other event.
        ///   - actions: what ``ContainerLifecycle/event(_:)`` returned for it.
        public init(event: Event, actions: [Action]) {
            var answer = Answer.none
            var effects: [Effect] = []
            func answered(_ a: Answer) {
                precondition(answer == .none, "two answers to \(event): \(answer) and \(a) in \(actions)")
                answer = a
            }
            for action in actions {
                switch action {
                case .holdConnection: answered(.holdConnection)
                case .forwardConnection: answered(.forwardConnection)
                case .refuseConnection: answered(.refuseConnection)
                case .answerProbe: answered(.answerProbe)
                case .answerGroupWake(let a): answered(.answerGroupWake(a))
                case .startExec(let id): answered(.startExec(id: id))
                case .holdExec(let id): answered(.holdExec(id: id))
                case .rejectExec(let id): answered(.rejectExec(id: id))
                case .deferSignal(let signal): answered(.deferSignal(signal: signal))
                case .suppressExit: answered(.suppressExit)
                case .signalProcess(let signal):
                    switch event.kind {
                    case .killRequested: answered(.signalNow(signal: signal))
                    case .started, .idleDeadlineReached, .activitySeen, .redirectUnavailable, .checkpointFinished,
                        .checkpointFailed, .connectionArrived, .probeArrived, .restoreFinished, .restoreFailed,
                        .lazyRestoreFailed, .coldStartFinished, .coldStartFailed, .execStarted, .execEnded,
                        .processExited, .deleteRequested, .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
                        .groupWakeRequested:
                        effects.append(.signalProcess(signal: signal))
                    }
                case .armIdleTimer(let deadline): effects.append(.armIdleTimer(deadline: deadline))
                case .cancelIdleTimer: effects.append(.cancelIdleTimer)
                case .armPreDumpTimer(let deadline): effects.append(.armPreDumpTimer(deadline: deadline))
                case .enableRedirect: effects.append(.enableRedirect)
                case .disableRedirect: effects.append(.disableRedirect)
                case .startCheckpoint: effects.append(.startCheckpoint)
                case .startIncrementalCheckpoint: effects.append(.startIncrementalCheckpoint)
                case .startPreDump: effects.append(.startPreDump)
                case .startScaleDownKill: effects.append(.startScaleDownKill)
                case .startRestore: effects.append(.startRestore)
                case .startFullRestore: effects.append(.startFullRestore)
                case .startColdStart: effects.append(.startColdStart)
                case .releaseHeldConnections(let count): effects.append(.releaseHeldConnections(count: count))
                case .failHeldConnections(let count): effects.append(.failHeldConnections(count: count))
                case .startHeldExecs(let ids): effects.append(.startHeldExecs(ids: ids))
                case .failHeldExecs(let ids): effects.append(.failHeldExecs(ids: ids))
                case .emitStatus(let status, let duration, let reason):
                    effects.append(.emitStatus(status, duration: duration, reason: reason))
                case .reportExit(let status): effects.append(.reportExit(status: status))
                case .cleanupImages: effects.append(.cleanupImages)
                case .cleanupAll: effects.append(.cleanupAll)
                case .wakeGroup: effects.append(.wakeGroup)
                case .emitDryRun(let decision): effects.append(.emitDryRun(decision))
                }
            }
            self.init(answer: answer, effects: effects)
        }
    }

    /// Applies one event and returns it as the driver carries it out: the answer for the caller
    /// (give it before releasing the lock that guards this value) and the effects (after it).
    /// Same transitions as ``event(_:)``.
    /// - Parameter event: what happened.
    /// - Returns: the answer and the effects.
    public mutating func step(_ event: Event) -> Step {
        Step(event: event, actions: self.event(event))
    }
}
