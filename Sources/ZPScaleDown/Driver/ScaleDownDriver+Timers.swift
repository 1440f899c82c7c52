import ZPCore

// The lifecycle's timer orders, honoured with real timers: `armIdleTimer` / `armPreDumpTimer`
// arm one (replacing the one of the same kind), `cancelIdleTimer` cancels both, and the idle
// timer firing spends both (decision 0017). Each armed timer is a child task of `runTimers()` that
// sleeps on the driver's clock until its deadline; a generation number tells the current timer of
// a kind from replaced or cancelled ones, which end without effect.
extension ScaleDownDriver {
    func armTimer(_ kind: TimerKind, at deadline: ZPInstant) {
        let order = state.withLock { s in
            s.timers.generation += 1
            let order = TimerOrder(kind: kind, deadline: deadline, generation: s.timers.generation)
            switch kind {
            case .idle:
                s.timers.idle = order
                s.timers.preDump = nil
            case .preDump:
                s.timers.preDump = order
            }
            return order
        }
        timerInput.yield(order)
    }

    func cancelTimers() {
        state.withLock { s in
            s.timers.idle = nil
            s.timers.preDump = nil
        }
    }

    /// The armed timers, for tests and logs: the idle deadline and the pre-dump deadline.
    var armedTimers: (idle: ZPInstant?, preDump: ZPInstant?) {
        state.withLock { ($0.timers.idle?.deadline, $0.timers.preDump?.deadline) }
    }

    /// Runs every armed timer until cancelled.
    func runTimers() async {
        await withDiscardingTaskGroup { group in
            for await order in timerOrders {
                group.addTask { [self] in
                    do {
                        try await clock.sleep(until: order.deadline)
                    } catch {
                        return
                    }
                    await timerFired(order)
                }
            }
        }
    }

    /// A timer reached its deadline: if it is still the armed one, it is spent (an idle timer
    /// takes the pre-dump timer with it) and the lifecycle hears of it with the ports' activity.
    /// Before the activator exists the firing waits for it (no scale-down without a way back).
    func timerFired(_ order: TimerOrder) async {
        let current = state.withLock { s -> Bool in
            let armed: TimerOrder?
            switch order.kind {
            case .idle: armed = s.timers.idle
            case .preDump: armed = s.timers.preDump
            }
            guard armed == order else { return false }
            guard s.activator != nil else {
                if !s.timers.firedEarly.contains(order) { s.timers.firedEarly.append(order) }
                return false
            }
            switch order.kind {
            case .idle:
                s.timers.idle = nil
                s.timers.preDump = nil
            case .preDump:
                s.timers.preDump = nil
            }
            return true
        }
        guard current else { return }
        let (lastActivity, open) = activity()
        let now = clock.now()
        switch order.kind {
        case .idle:
            await feed(.idleDeadlineReached(lastActivity: lastActivity, openConnections: open, now: now))
        case .preDump:
            await feed(.preDumpDeadlineReached(lastActivity: lastActivity, openConnections: open, now: now))
        }
    }

    /// Timers that fired before the activator existed fire now (idle first).
    func fireEarlyTimers() async {
        let early = state.withLock { s in
            defer { s.timers.firedEarly = [] }
            return s.timers.firedEarly.sorted { a, _ in a.kind == .idle }
        }
        for order in early { await timerFired(order) }
    }

    /// The newest activity stamp and the open connections over the container's ports, read at a
    /// deadline. Connections the application has not accepted yet make it active now: a
    /// checkpoint would reset them (a burst larger than the application's backlog leaves some in
    /// its queues for seconds). So does listener pressure seen within
    /// ``Settings/listenerPressureHold``: clients whose handshake completion was dropped, or
    /// answered with a SYN cookie, have no state the queues show and retransmit with backoff,
    /// more than a scale-down duration apart on a loaded node; after a checkpoint their
    /// retransmission would meet a listener that never sent their cookie and get a reset.
    func activity() -> (ZPInstant?, Int) {
        guard let redirect else { return (nil, 0) }
        let (ports, pid) = state.withLock { ($0.ports, $0.lifecycle.pid) }
        let (last, open) = redirect.activity(ports: ports)
        guard let pid else { return (last, open) }
        let pending = control.pendingConnections(on: ports, treeAt: pid)
        let now = clock.now()
        let pressured = state.withLock { s in
            if let before = s.listenerPressure, let counter = pending.listenerPressure, counter != before {
                s.listenerPressureSeen = now
            }
            s.listenerPressure = pending.listenerPressure
            guard let seen = s.listenerPressureSeen else { return false }
            return now < seen.advanced(by: settings.listenerPressureHold)
        }
        if pending.queued > 0 || pressured { return (now, open) }
        return (last, open)
    }
}
