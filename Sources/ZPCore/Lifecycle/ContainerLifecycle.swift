// The lifecycle of one scale-to-zero container as a pure value-type state machine
// (docs/state-machine.md, docs/decisions/0002-lifecycle-state-machine.md). No I/O and no clock:
// the driver reports facts with `event(_:)` and carries out the returned orders, in order, after
// it released whatever lock guards the value.
// This file: the state and the transitions. Vocabulary (events, actions, phases):
// ContainerLifecycle+Types.swift; read-only queries: ContainerLifecycle+Queries.swift; the pre-dump
// sub-machine of RUNNING: PreDumpCycle.swift.

/// The lifecycle of one container managed by zeropod: running, checkpointing, scaled down,
/// restoring, and the failure paths between them.
///
/// The driver (the shim, and the activator for connections) feeds ``Event``s and carries out the
/// returned ``Action``s in order:
///
/// ```swift
/// let actions = lifecycle.withLock { $0.event(.connectionArrived) }
/// for action in actions { try await perform(action) }   // outside the lock
/// ```
///
/// With ``Configuration/preDump``, RUNNING has pre-dump sub-states (``preDumpDeadline``,
/// ``preDumpInFlight``, ``hasPreDumpImage``, ``scaleDownWaitsForPreDump``): a pre-dump runs while
/// the process keeps serving, and the checkpoint at the deadline is incremental on top of it.
///
/// With ``Configuration/dryRun``, RUNNING has one more sub-state, virtually scaled down
/// (``dryRunScaledDown``): the idle deadline only reports ``DryRunDecision/wouldScaleDown`` and
/// the idle timer then polls for traffic, which reports ``DryRunDecision/wouldRestore(_:)``. The
/// phase never leaves RUNNING, CREATED or STOPPED: nothing is checkpointed, killed or redirected.
///
/// Invariants kept by construction: at most one checkpoint, kill-for-scale-down, restore or cold
/// start is in flight, and never a checkpoint while a pre-dump is; no scale-down while an exec runs; every held connection and exec is
/// released or failed exactly once; an exit is reported at most once and `stopped` is terminal.
/// Events that make no sense in the current phase (a late timer, a duplicate completion) return
/// an empty list and leave the state untouched.
public struct ContainerLifecycle: Sendable {
    /// The settings this container was created with.
    public let configuration: Configuration

    // Internal rather than private: the queries (ContainerLifecycle+Queries.swift) read them.
    var state: State
    /// False after a checkpoint or restore failed, or when the configuration disables it.
    private(set) var checkpointingAllowed: Bool
    /// False when the scale-down duration is zero or the redirect could not be set up.
    private(set) var scaleDownAllowed: Bool
    /// False when the configuration does not ask for pre-dumps, or after a pre-dump failed.
    private(set) var preDumpAllowed: Bool
    /// The newest activity reported with `activitySeen` or an idle deadline.
    private var lastActivity: ZPInstant?
    /// The newest init pid: the running one, or the checkpointed one while scaled down.
    private(set) var lastPid: Int32?

    /// Creates the lifecycle of a container that was created but not yet started.
    /// - Parameter configuration: the container's scale-down settings.
    public init(configuration: Configuration) {
        self.configuration = configuration
        self.state = .created
        self.checkpointingAllowed = configuration.checkpointingEnabled
        self.scaleDownAllowed = configuration.scaleDownDuration > .zero
        // A dry run never dumps: a pre-dump is part of the scale-down it only reports.
        self.preDumpAllowed = configuration.preDump && !configuration.dryRun
    }

    // MARK: - State

    enum State: Sendable {
        case created
        case running(Running)
        case scalingDown(ScalingDown)
        case scaledDown(ScaledDown)
        case waking(Waking)
        case stopped(Stopped)
    }

    enum ScaleDownMethod: Sendable { case checkpoint, kill }
    enum WakeMethod: Sendable { case restore, coldStart }

    struct Running: Sendable {
        var pid: Int32
        /// Set exactly when the idle timer is armed.
        var idleDeadline: ZPInstant?
        /// Exec processes that run now; while any runs the container is pinned.
        var execs: [String]
        /// The pre-dump of this process (deadline, image, a checkpoint waiting for it).
        var preDump = PreDumpCycle()
        /// Dry run: when the container was virtually scaled down (the idle deadline passed and
        /// `wouldScaleDown` was reported); nil while it counts as running. Set only in a dry run,
        /// and only while the idle timer (then the traffic poll) is armed.
        var dryRunScaledDownSince: ZPInstant? = nil
    }

    /// Connections, execs and signals that wait for an operation in flight.
    struct Waiters: Sendable {
        var connections = 0
        var execs: [String] = []
        var signals: [Int32] = []
        var isEmpty: Bool { connections == 0 && execs.isEmpty && signals.isEmpty }
    }

    struct ScalingDown: Sendable {
        var method: ScaleDownMethod
        var pid: Int32
        /// The dump runs on top of a pre-dump image; if it fails, one plain dump follows.
        var incremental = false
        var waiters = Waiters()
        /// The process's exit status if the reaper saw it exit during the dump.
        var exitStatus: Int32?
    }

    struct ScaledDown: Sendable {
        /// `.checkpoint`: an image exists and waking restores it; `.kill`: waking cold-starts.
        var method: ScaleDownMethod
    }

    struct Waking: Sendable {
        var method: WakeMethod
        var waiters: Waiters
        /// A lazy restore failed and the full restore from the same images runs.
        var fullRestoreRuns = false
    }

    struct Stopped: Sendable {
        var exitStatus: Int32?
        var deleted: Bool
    }

    // MARK: - Events

    /// Applies one event and returns the orders it causes, in the order they must be carried out.
    ///
    /// An event that does not apply to the current phase returns `[]` and changes nothing (see
    /// the table in docs/state-machine.md).
    /// - Parameter event: what happened.
    /// - Returns: the actions for the driver; empty when there is nothing to do.
    public mutating func event(_ event: Event) -> [Action] {
        switch event {
        case .started(let pid, let now): return started(pid: pid, now: now)
        case .idleDeadlineReached(let last, let open, let now):
            return idleDeadlineReached(lastActivity: last, openConnections: open, now: now)
        case .activitySeen(let at):
            recordActivity(at)
            return []
        case .redirectUnavailable: return redirectUnavailable()
        case .checkpointFinished(let duration): return checkpointFinished(duration: duration)
        case .checkpointFailed(let reason, let now): return checkpointFailed(reason: reason, now: now)
        case .connectionArrived: return connectionArrived()
        case .probeArrived: return probeArrived()
        case .restoreFinished(let pid, let duration, let now):
            return wakeFinished(.restore, pid: pid, duration: duration, now: now)
        case .restoreFailed(let reason): return restoreFailed(reason: reason)
        case .lazyRestoreFailed: return lazyRestoreFailed()
        case .coldStartFinished(let pid, let now): return wakeFinished(.coldStart, pid: pid, duration: nil, now: now)
        case .coldStartFailed(let reason): return coldStartFailed(reason: reason)
        case .execStarted(let id): return execStarted(id: id)
        case .execEnded(let id, let now): return execEnded(id: id, now: now)
        case .killRequested(let signal): return killRequested(signal: signal)
        case .processExited(let pid, let status): return processExited(pid: pid, status: status)
        case .deleteRequested: return deleteRequested()
        case .preDumpDeadlineReached(let last, let open, let now):
            return preDumpDeadlineReached(lastActivity: last, openConnections: open, now: now)
        case .preDumpFinished: return preDumpFinished()
        case .preDumpFailed: return preDumpFailed()
        case .groupWakeRequested: return groupWakeRequested()
        }
    }

    // MARK: - Transitions

    private mutating func started(pid: Int32, now: ZPInstant) -> [Action] {
        switch state {
        case .created:
            lastPid = pid
            var actions: [Action] = [.emitStatus(.running, duration: nil, reason: nil)]
            actions += enterRunning(pid: pid, execs: [], now: now)
            return actions
        case .running, .scalingDown, .scaledDown, .waking, .stopped:
            return []
        }
    }

    private mutating func idleDeadlineReached(
        lastActivity seen: ZPInstant?,
        openConnections: Int,
        now: ZPInstant
    ) -> [Action] {
        if let seen { recordActivity(seen) }
        switch state {
        case .running(var r):
            // Not armed (exec running, scale-down off) or a stale firing of a re-armed timer.
            guard let deadline = r.idleDeadline, now >= deadline else { return [] }
            let window = configuration.scaleDownDuration
            if let since = r.dryRunScaledDownSince {
                // Dry run, virtually scaled down: this firing is the traffic poll. Traffic newer
                // than the virtual scale-down would have restored the container; then the cycle
                // starts over as after a real restore.
                guard let last = lastActivity, last > since else {
                    return rearm(&r, at: now.advanced(by: dryRunPollInterval), now: now)
                }
                r.dryRunScaledDownSince = nil
                let restart = rearm(&r, at: now.advanced(by: window), now: now)
                return [.emitDryRun(.wouldRestore(.traffic(at: last)))] + restart
            }
            if openConnections > 0 && configuration.openConnectionsCountAsActivity {
                return rearm(&r, at: now.advanced(by: window), now: now)
            }
            if let last = lastActivity, last.advanced(by: window) > now {
                return rearm(&r, at: last.advanced(by: window), now: now)
            }
            if configuration.dryRun {
                // Report it, keep the process running, and poll for the traffic that would wake it.
                r.dryRunScaledDownSince = now
                return [.emitDryRun(.wouldScaleDown)] + rearm(&r, at: now.advanced(by: dryRunPollInterval), now: now)
            }
            guard checkpointingAllowed else {
                state = .scalingDown(ScalingDown(method: .kill, pid: r.pid))
                return [.enableRedirect, .startScaleDownKill]
            }
            switch r.preDump.idleDeadlinePassed() {
            case .waitForPreDump:
                // Let the pre-dump finish (the process keeps serving meanwhile), then checkpoint.
                r.idleDeadline = nil
                state = .running(r)
                return []
            case .incremental:
                state = .scalingDown(ScalingDown(method: .checkpoint, pid: r.pid, incremental: true))
                return [.enableRedirect, .startIncrementalCheckpoint]
            case .plain:
                state = .scalingDown(ScalingDown(method: .checkpoint, pid: r.pid))
                return [.enableRedirect, .startCheckpoint]
            }
        case .created, .scalingDown, .scaledDown, .waking, .stopped:
            return []
        }
    }

    /// The dry run's traffic poll interval (the configured one if positive, else the default).
    private var dryRunPollInterval: Duration {
        configuration.dryRunPollInterval > .zero
            ? configuration.dryRunPollInterval : Configuration.defaultDryRunPollInterval
    }

    private mutating func rearm(_ running: inout Running, at deadline: ZPInstant, now: ZPInstant) -> [Action] {
        var actions = armTimers(&running, idleDeadline: deadline, now: now)
        state = .running(running)
        actions.insert(.armIdleTimer(deadline: deadline), at: 0)
        return actions
    }

    /// Sets the idle deadline and lets the pre-dump cycle follow it (``PreDumpCycle``).
    /// The caller stores `running` and emits `armIdleTimer` before the returned actions.
    private func armTimers(_ running: inout Running, idleDeadline: ZPInstant, now: ZPInstant) -> [Action] {
        running.idleDeadline = idleDeadline
        return running.preDump.idleTimerArmed(
            idleDeadline: idleDeadline,
            now: now,
            halfWindow: configuration.scaleDownDuration / 2,
            allowed: preDumpsPermitted(for: running),
            lastActivity: lastActivity
        )
    }

    /// Whether pre-dumps may run for `running` at all: pre-dumps, checkpointing and scale-down are
    /// on, and no exec pins the process. (``PreDumpCycle/wanted(allowed:lastActivity:)`` adds the
    /// image's age.)
    private func preDumpsPermitted(for running: Running) -> Bool {
        preDumpAllowed && checkpointingAllowed && scaleDownAllowed && running.execs.isEmpty
    }

    private mutating func recordActivity(_ instant: ZPInstant) {
        if let last = lastActivity, last >= instant { return }
        lastActivity = instant
    }

    private mutating func redirectUnavailable() -> [Action] {
        scaleDownAllowed = false
        switch state {
        case .running(var r):
            // No scale-down any more: no timers, and no checkpoint waiting for a pre-dump.
            let wasArmed = r.idleDeadline != nil
            // A dry run's virtual scale-down ends as a real one would: the container wakes at once.
            let wake: [Action] = r.dryRunScaledDownSince != nil ? [.emitDryRun(.wouldRestore(.redirectLost))] : []
            r.dryRunScaledDownSince = nil
            r.idleDeadline = nil
            r.preDump.pinned()
            state = .running(r)
            return (wasArmed ? [.cancelIdleTimer] : []) + wake
        case .scaledDown(let scaled):
            // Nothing can reach the activator any more: wake now rather than stay down unreachable.
            return wake(scaled, waiters: Waiters())
        case .created, .scalingDown, .waking, .stopped:
            // A scale-down in flight wakes as soon as it completes (`enterScaledDown`).
            return []
        }
    }

    private mutating func checkpointFinished(duration: Duration) -> [Action] {
        switch state {
        case .scalingDown(let s):
            switch s.method {
            case .checkpoint:
                return [.emitStatus(.scaledDown, duration: duration, reason: nil)]
                    + enterScaledDown(ScaledDown(method: .checkpoint), waiters: s.waiters)
            case .kill:
                return []
            }
        case .created, .running, .scaledDown, .waking, .stopped:
            return []
        }
    }

    private mutating func checkpointFailed(reason: String, now: ZPInstant) -> [Action] {
        switch state {
        case .scalingDown(var s):
            switch s.method {
            case .checkpoint:
                if s.incremental && s.exitStatus == nil {
                    // The pre-dump may be what failed it: one plain dump, without the parent.
                    s.incremental = false
                    state = .scalingDown(s)
                    return [.cleanupImages, .startCheckpoint]
                }
                checkpointingAllowed = false
                var actions: [Action] = [
                    .disableRedirect, .cleanupImages, .emitStatus(.checkpointFailed, duration: nil, reason: reason),
                ]
                if let status = s.exitStatus {
                    // The process died while CRIU dumped it: nothing is left to run.
                    actions += failWaiters(s.waiters)
                    actions += enterStopped(status: status, deleted: false)
                    return actions
                }
                actions += releaseWaiters(s.waiters)
                actions += enterRunning(pid: s.pid, execs: s.waiters.execs, now: now)
                actions += s.waiters.signals.map { .signalProcess(signal: $0) }
                return actions
            case .kill:
                return []
            }
        case .created, .running, .scaledDown, .waking, .stopped:
            return []
        }
    }

    /// Enters `scaledDown` after a scale-down completed, then stops if a stop signal waited or
    /// wakes at once if anything else waited.
    private mutating func enterScaledDown(_ scaled: ScaledDown, waiters: Waiters) -> [Action] {
        state = .scaledDown(scaled)
        if let stop = waiters.signals.first(where: Self.isStopSignal) {
            return failWaiters(waiters) + stopWhileScaledDown(scaled, status: Self.exitStatus(afterStopSignal: stop))
        }
        // Wake at once if anything waits, or if no redirect can wake the container later.
        if waiters.isEmpty && scaleDownAllowed { return [] }
        return wake(scaled, waiters: waiters)
    }

    private mutating func wake(_ scaled: ScaledDown, waiters: Waiters) -> [Action] {
        switch scaled.method {
        case .checkpoint:
            state = .waking(Waking(method: .restore, waiters: waiters))
            return [.startRestore]
        case .kill:
            state = .waking(Waking(method: .coldStart, waiters: waiters))
            return [.startColdStart]
        }
    }

    /// A connection, or a wake group member's request when `fromGroup`.
    private mutating func connectionArrived(fromGroup: Bool = false) -> [Action] {
        let wakesGroup = configuration.wakesGroup && !fromGroup
        switch state {
        case .created, .stopped:
            return [.refuseConnection]
        case .running:
            return [.forwardConnection]
        case .scalingDown(var s):
            // The first to wait for a scale-down in flight: the container wakes right after it.
            let first = s.waiters.connections == 0 && s.waiters.execs.isEmpty
            s.waiters.connections += 1
            state = .scalingDown(s)
            return wakesGroup && first ? [.holdConnection, .wakeGroup] : [.holdConnection]
        case .scaledDown(let scaled):
            return [.holdConnection] + (wakesGroup ? [.wakeGroup] : []) + wake(scaled, waiters: Waiters(connections: 1))
        case .waking(var w):
            w.waiters.connections += 1
            state = .waking(w)
            return [.holdConnection]
        }
    }

    private mutating func groupWakeRequested() -> [Action] {
        switch state {
        case .created, .running:
            return [.answerGroupWake(.notScaledDown)]
        case .waking:
            return [.answerGroupWake(.alreadyWaking)]
        case .stopped:
            return [.answerGroupWake(.stopped)]
        case .scalingDown, .scaledDown:
            // Held and released like a connection, so it is answered once the process runs.
            return connectionArrived(fromGroup: true)
        }
    }

    private func probeArrived() -> [Action] {
        switch state {
        case .created, .stopped: return [.refuseConnection]
        case .running: return [.forwardConnection]
        case .scalingDown, .scaledDown, .waking: return [.answerProbe]
        }
    }

    private mutating func wakeFinished(
        _ method: WakeMethod,
        pid: Int32,
        duration: Duration?,
        now: ZPInstant
    ) -> [Action] {
        switch state {
        case .waking(let w):
            guard w.method == method else { return [] }
            lastPid = pid
            var actions = releaseWaiters(w.waiters)
            actions.append(.disableRedirect)
            switch method {
            case .restore: actions.append(.cleanupImages)
            case .coldStart: break
            }
            actions.append(.emitStatus(.running, duration: duration, reason: nil))
            actions += enterRunning(pid: pid, execs: w.waiters.execs, now: now)
            actions += w.waiters.signals.map { .signalProcess(signal: $0) }
            return actions
        case .created, .running, .scalingDown, .scaledDown, .stopped:
            return []
        }
    }

    private mutating func lazyRestoreFailed() -> [Action] {
        switch state {
        case .waking(var w):
            switch w.method {
            case .restore:
                // Once: a full restore that fails reports restoreFailed.
                guard !w.fullRestoreRuns else { return [] }
                w.fullRestoreRuns = true
                state = .waking(w)
                return [.startFullRestore]
            case .coldStart:
                return []
            }
        case .created, .running, .scalingDown, .scaledDown, .stopped:
            return []
        }
    }

    private mutating func restoreFailed(reason: String) -> [Action] {
        switch state {
        case .waking(var w):
            switch w.method {
            case .restore:
                // One cold start from the bundle; the image is of no further use.
                checkpointingAllowed = false
                w.method = .coldStart
                state = .waking(w)
                return [.cleanupImages, .emitStatus(.restoreFailed, duration: nil, reason: reason), .startColdStart]
            case .coldStart:
                return []
            }
        case .created, .running, .scalingDown, .scaledDown, .stopped:
            return []
        }
    }

    private mutating func coldStartFailed(reason: String) -> [Action] {
        switch state {
        case .waking(let w):
            switch w.method {
            case .coldStart:
                // Nothing left to try: exit(1) lets the kubelet restart the container.
                var actions = failWaiters(w.waiters)
                actions.append(.disableRedirect)
                actions.append(.emitStatus(.restoreFailed, duration: nil, reason: reason))
                actions += enterStopped(status: 1, deleted: false)
                return actions
            case .restore:
                return []
            }
        case .created, .running, .scalingDown, .scaledDown, .stopped:
            return []
        }
    }

    private mutating func execStarted(id: String) -> [Action] {
        switch state {
        case .created, .stopped:
            return [.rejectExec(id: id)]
        case .running(var r):
            guard !r.execs.contains(id) else { return [] }
            r.execs.append(id)
            let wasArmed = r.idleDeadline != nil
            r.idleDeadline = nil
            // The exec pins the container: no pre-dump is due, and a waiting scale-down is off.
            r.preDump.pinned()
            // Dry run: an exec would have restored a scaled-down container (no group wake: the
            // other members are real containers, and this one was never really down).
            let wake: [Action] = r.dryRunScaledDownSince != nil ? [.emitDryRun(.wouldRestore(.exec(id: id)))] : []
            r.dryRunScaledDownSince = nil
            state = .running(r)
            return (wasArmed ? [.cancelIdleTimer] : []) + wake + [.startExec(id: id)]
        case .scalingDown(var s):
            guard !s.waiters.execs.contains(id) else { return [] }
            let first = s.waiters.connections == 0 && s.waiters.execs.isEmpty
            s.waiters.execs.append(id)
            state = .scalingDown(s)
            return configuration.wakesGroup && first ? [.holdExec(id: id), .wakeGroup] : [.holdExec(id: id)]
        case .scaledDown(let scaled):
            return [.holdExec(id: id)] + (configuration.wakesGroup ? [.wakeGroup] : [])
                + wake(scaled, waiters: Waiters(execs: [id]))
        case .waking(var w):
            guard !w.waiters.execs.contains(id) else { return [] }
            w.waiters.execs.append(id)
            state = .waking(w)
            return [.holdExec(id: id)]
        }
    }

    private mutating func execEnded(id: String, now: ZPInstant) -> [Action] {
        switch state {
        case .running(var r):
            guard let index = r.execs.firstIndex(of: id) else { return [] }
            r.execs.remove(at: index)
            state = .running(r)
            guard r.execs.isEmpty else { return [] }
            return enterRunning(pid: r.pid, execs: [], now: now, preDump: PreDumpCycle(image: r.preDump.image))
        case .scalingDown(var s):
            // A held exec was cancelled before it could run.
            guard let index = s.waiters.execs.firstIndex(of: id) else { return [] }
            s.waiters.execs.remove(at: index)
            state = .scalingDown(s)
            return []
        case .waking(var w):
            guard let index = w.waiters.execs.firstIndex(of: id) else { return [] }
            w.waiters.execs.remove(at: index)
            state = .waking(w)
            return []
        case .created, .scaledDown, .stopped:
            return []
        }
    }

    private mutating func killRequested(signal: Int32) -> [Action] {
        switch state {
        case .created, .running:
            return [.signalProcess(signal: signal)]
        case .scalingDown(var s):
            guard signal != 0 else { return [] }
            s.waiters.signals.append(signal)
            state = .scalingDown(s)
            return [.deferSignal(signal: signal)]
        case .scaledDown(let scaled):
            if signal == 0 { return [] }
            if Self.isStopSignal(signal) {
                return stopWhileScaledDown(scaled, status: Self.exitStatus(afterStopSignal: signal))
            }
            // A signal the app may handle (HUP, USR1, ...): wake it and deliver it then.
            return [.deferSignal(signal: signal)] + wake(scaled, waiters: Waiters(signals: [signal]))
        case .waking(var w):
            guard signal != 0 else { return [] }
            w.waiters.signals.append(signal)
            state = .waking(w)
            return [.deferSignal(signal: signal)]
        case .stopped:
            return []
        }
    }

    private mutating func processExited(pid: Int32, status: Int32) -> [Action] {
        switch state {
        case .created:
            return enterStopped(status: status, deleted: false)
        case .running(let r):
            guard pid == r.pid else { return [.suppressExit] }
            var actions: [Action] = r.idleDeadline != nil ? [.cancelIdleTimer] : []
            actions += enterStopped(status: status, deleted: false)
            return actions
        case .scalingDown(var s):
            guard pid == s.pid else { return [.suppressExit] }
            switch s.method {
            case .checkpoint:
                // CRIU ends the dumped process; the outcome comes with checkpointFinished/Failed.
                if s.exitStatus == nil { s.exitStatus = status }
                state = .scalingDown(s)
                return [.suppressExit]
            case .kill:
                if s.waiters.signals.contains(where: Self.isStopSignal) {
                    // A stop was requested while we killed it: this exit is the container's end.
                    return failWaiters(s.waiters) + [.disableRedirect] + enterStopped(status: status, deleted: false)
                }
                return [.suppressExit, .emitStatus(.scaledDown, duration: nil, reason: nil)]
                    + enterScaledDown(ScaledDown(method: .kill), waiters: s.waiters)
            }
        case .scaledDown, .waking, .stopped:
            // The checkpointed or killed process, reaped late; or an exit already reported.
            return [.suppressExit]
        }
    }

    private mutating func deleteRequested() -> [Action] {
        switch state {
        case .created:
            state = .stopped(Stopped(exitStatus: nil, deleted: true))
            return [.cleanupAll]
        case .running, .scalingDown, .waking:
            // The process is alive: the driver refuses, as runc does, until it is killed.
            return []
        case .scaledDown(let scaled):
            var actions = stopWhileScaledDown(scaled, status: 0)
            actions.append(.cleanupAll)
            markDeleted()
            return actions
        case .stopped(let s):
            guard !s.deleted else { return [] }
            markDeleted()
            return [.cleanupAll]
        }
    }

    private mutating func preDumpDeadlineReached(
        lastActivity seen: ZPInstant?,
        openConnections: Int,
        now: ZPInstant
    ) -> [Action] {
        if let seen { recordActivity(seen) }
        switch state {
        case .running(var r):
            let actions = r.preDump.deadlineReached(
                now: now,
                idleDeadline: r.idleDeadline,
                halfWindow: configuration.scaleDownDuration / 2,
                openConnectionsCount: openConnections > 0 && configuration.openConnectionsCountAsActivity,
                lastActivity: lastActivity,
                allowed: preDumpsPermitted(for: r)
            )
            state = .running(r)
            return actions
        case .created, .scalingDown, .scaledDown, .waking, .stopped:
            return []
        }
    }

    private mutating func preDumpFinished() -> [Action] {
        switch state {
        case .running(var r):
            let completion = r.preDump.finished()
            state = .running(r)
            return preDumpCompleted(completion, pid: r.pid)
        case .created, .scalingDown, .scaledDown, .waking, .stopped:
            // A pre-dump that outlived its process: the image goes with the next cleanup.
            return []
        }
    }

    private mutating func preDumpFailed() -> [Action] {
        switch state {
        case .running(var r):
            let completion = r.preDump.failed()
            switch completion {
            case .ignored: return []
            case .keepRunning, .checkpoint:
                // Logged by the driver; checkpoints are plain ones from now on.
                preDumpAllowed = false
            }
            state = .running(r)
            return preDumpCompleted(completion, pid: r.pid)
        case .created, .scalingDown, .scaledDown, .waking, .stopped:
            return []
        }
    }

    /// Starts the checkpoint that waited for a pre-dump, if one did.
    private mutating func preDumpCompleted(_ completion: PreDumpCycle.Completion, pid: Int32) -> [Action] {
        switch completion {
        case .ignored, .keepRunning:
            return []
        case .checkpoint(let incremental):
            state = .scalingDown(ScalingDown(method: .checkpoint, pid: pid, incremental: incremental))
            return [.enableRedirect, incremental ? .startIncrementalCheckpoint : .startCheckpoint]
        }
    }

    // MARK: - Helpers

    /// Enters `running` with `execs` pinning it, arming the idle timer (and the pre-dump deadline)
    /// if nothing pins it. `preDump` is the process's pre-dump, kept when it keeps running.
    private mutating func enterRunning(
        pid: Int32,
        execs: [String],
        now: ZPInstant,
        preDump: PreDumpCycle = PreDumpCycle()
    ) -> [Action] {
        var running = Running(pid: pid, idleDeadline: nil, execs: execs, preDump: preDump)
        guard execs.isEmpty, scaleDownAllowed else {
            state = .running(running)
            return []
        }
        let deadline = now.advanced(by: configuration.scaleDownDuration)
        let more = armTimers(&running, idleDeadline: deadline, now: now)
        state = .running(running)
        return [.armIdleTimer(deadline: deadline)] + more
    }

    /// Enters `stopped` and reports the exit.
    private mutating func enterStopped(status: Int32, deleted: Bool) -> [Action] {
        state = .stopped(Stopped(exitStatus: status, deleted: deleted))
        return [.emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: status)]
    }

    /// Stops a scaled-down container without restoring it.
    private mutating func stopWhileScaledDown(_ scaled: ScaledDown, status: Int32) -> [Action] {
        var actions: [Action] = [.disableRedirect]
        switch scaled.method {
        case .checkpoint: actions.append(.cleanupImages)
        case .kill: break
        }
        return actions + enterStopped(status: status, deleted: false)
    }

    private mutating func markDeleted() {
        switch state {
        case .stopped(var s):
            s.deleted = true
            state = .stopped(s)
        case .created, .running, .scalingDown, .scaledDown, .waking:
            preconditionFailure("markDeleted outside stopped: \(state)")
        }
    }

    private func releaseWaiters(_ waiters: Waiters) -> [Action] {
        var actions: [Action] = []
        if waiters.connections > 0 { actions.append(.releaseHeldConnections(count: waiters.connections)) }
        if !waiters.execs.isEmpty { actions.append(.startHeldExecs(ids: waiters.execs)) }
        return actions
    }

    private func failWaiters(_ waiters: Waiters) -> [Action] {
        var actions: [Action] = []
        if waiters.connections > 0 { actions.append(.failHeldConnections(count: waiters.connections)) }
        if !waiters.execs.isEmpty { actions.append(.failHeldExecs(ids: waiters.execs)) }
        return actions
    }

    /// SIGINT, SIGQUIT, SIGKILL and SIGTERM (Linux numbers) stop a scaled-down container without
    /// waking it; other signals are delivered after a wake-up.
    static func isStopSignal(_ signal: Int32) -> Bool {
        signal == 2 || signal == 3 || signal == 9 || signal == 15
    }

    /// The exit status reported when a scaled-down container is stopped by `signal`: 137 for
    /// SIGKILL (what a killed process reports), 0 otherwise (the original's answer).
    static func exitStatus(afterStopSignal signal: Int32) -> Int32 {
        signal == 9 ? 137 : 0
    }
}
