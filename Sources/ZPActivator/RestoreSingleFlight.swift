/// The single-flight restore logic of the activator, as a pure state machine.
///
/// However many connections need the application at once, exactly one of them is told to
/// restore it (``NeedAppAction/startRestore``); all others are parked until the restore
/// finishes and are then resumed together, or all failed together. The machine performs no
/// I/O and resumes nothing itself: every event returns an action that the driver carries out
/// after releasing its lock (see `Activator`).
///
/// `Waiter` is whatever the driver needs to wake a parked connection later (a continuation in
/// the activator, a plain value in tests).
public struct RestoreSingleFlight<Waiter> {
    private struct Parked {
        var id: Int
        var waiter: Waiter
    }

    private enum State {
        case scaledDown
        case restoring(waiters: [Parked])
        case running
        case stopped
    }

    private var state: State

    /// Creates the machine in `.scaledDown` (the default) or `.running`.
    /// - Parameter startsScaledDown: `false` when the application is running at creation.
    public init(startsScaledDown: Bool = true) {
        self.state = startsScaledDown ? .scaledDown : .running
    }

    /// The current phase, for reports and tests.
    public var phase: RestorePhase {
        switch state {
        case .scaledDown: return .scaledDown
        case .restoring(let waiters): return .restoring(parked: waiters.count)
        case .running: return .running
        case .stopped: return .stopped
        }
    }

    /// What the driver must do with a connection that needs the application.
    public enum NeedAppAction: Equatable, Sendable {
        /// This connection's task runs the restore; the waiter was not stored.
        case startRestore
        /// The waiter was stored; it is resumed or failed when the restore finishes.
        case park
        /// The application runs: go ahead now; the waiter was not stored.
        case proceed
        /// The activator is stopping: close the connection; the waiter was not stored.
        case reject
    }

    /// A connection (identified by `id`) needs the application.
    /// - Parameters:
    ///   - id: unique per connection, used to cancel a parked waiter.
    ///   - waiter: stored only when the action is ``NeedAppAction/park``.
    public mutating func connectionNeedsApp(id: Int, waiter: Waiter) -> NeedAppAction {
        switch state {
        case .scaledDown:
            state = .restoring(waiters: [])
            return .startRestore
        case .restoring(var waiters):
            waiters.append(Parked(id: id, waiter: waiter))
            state = .restoring(waiters: waiters)
            return .park
        case .running:
            return .proceed
        case .stopped:
            return .reject
        }
    }

    /// What the driver must do when a restore ended.
    public enum RestoreEndAction {
        /// Resume (on success) or fail (on failure) these waiters, in arrival order.
        case wake([Waiter])
        /// No restore was running (the activator stopped meanwhile): nothing to wake.
        case none
    }

    /// The restore started by ``NeedAppAction/startRestore`` succeeded and the redirect is off.
    public mutating func restoreSucceeded() -> RestoreEndAction {
        switch state {
        case .restoring(let waiters):
            state = .running
            return .wake(waiters.map(\.waiter))
        case .scaledDown, .running, .stopped:
            return .none
        }
    }

    /// The restore failed. The machine goes back to `.scaledDown`, so that a later connection
    /// tries again; the parked waiters must be failed.
    public mutating func restoreFailed() -> RestoreEndAction {
        switch state {
        case .restoring(let waiters):
            state = .scaledDown
            return .wake(waiters.map(\.waiter))
        case .scaledDown, .running, .stopped:
            return .none
        }
    }

    /// A parked connection's task was cancelled: returns its waiter to fail, if it is still parked.
    public mutating func waiterCancelled(id: Int) -> Waiter? {
        switch state {
        case .restoring(var waiters):
            guard let index = waiters.firstIndex(where: { $0.id == id }) else { return nil }
            let removed = waiters.remove(at: index)
            state = .restoring(waiters: waiters)
            return removed.waiter
        case .scaledDown, .running, .stopped:
            return nil
        }
    }

    /// The application was checkpointed (or killed) again: re-arm the restore trigger.
    public mutating func appScaledDown() -> ScaledDownAction {
        switch state {
        case .scaledDown, .running:
            state = .scaledDown
            return .armed
        case .restoring:
            return .ignoredWhileRestoring
        case .stopped:
            return .ignoredWhileStopped
        }
    }

    /// The activator stops: returns the parked waiters to fail; later connections are rejected.
    public mutating func stop() -> [Waiter] {
        switch state {
        case .restoring(let waiters):
            state = .stopped
            return waiters.map(\.waiter)
        case .scaledDown, .running, .stopped:
            state = .stopped
            return []
        }
    }
}

/// Where the application is, seen from the activator's single-flight gate.
public enum RestorePhase: Sendable, Equatable {
    /// Checkpointed or stopped: the next connection must restore it.
    case scaledDown
    /// One restore is running; `parked` connections wait for it.
    case restoring(parked: Int)
    /// Restored (or never scaled down): connections go straight to the application.
    case running
    /// The activator is shutting down: connections are refused.
    case stopped
}

/// What the gate did when told the application was scaled down again.
public enum ScaledDownAction: Equatable, Sendable {
    /// The next connection restores the application.
    case armed
    /// A restore is running: the scale-down is a caller bug or a race; nothing changed.
    case ignoredWhileRestoring
    /// The activator stopped; nothing changed.
    case ignoredWhileStopped
}
