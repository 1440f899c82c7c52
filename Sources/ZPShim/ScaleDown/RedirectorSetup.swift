import Synchronization
import ZPBPF
import ZPCore
import ZPScaleDown

// A pod's redirector is set up when it is first needed, not before `runc create` (decision 0060):
// Create only joins the pod; the first driver that arms its activator starts the setup as a
// background job and waits for it; Delete waits for a setup under way before it releases the pod.

/// A pod's redirector while it is set up: pending (not started, or started), then ready or
/// failed, once. The setup starts when a container first needs the redirector (``start()``):
/// its driver arming the activator. Waiters are resumed when it settles; a cancelled waiter is
/// resumed at once with nil.
final class RedirectorSetup: Sendable {
    /// How the setup ended.
    enum Outcome: Sendable {
        /// The redirector is attached and registered with the node.
        case ready(PodRedirector)
        /// The setup failed: why (the container runs without scale-down, as before decision 0060).
        case failed(String)
    }

    private struct Waiting {
        var waiters: [UInt64: CheckedContinuation<Outcome?, Never>] = [:]
        var next: UInt64 = 0
        var started = false
    }

    private enum State {
        case pending(Waiting)
        case settled(Outcome)
    }

    private let state = Mutex(State.pending(Waiting()))
    private let starter: @Sendable (RedirectorSetup) -> Void

    /// A setup that `starter` carries out (it must settle it) when ``start()`` is first called.
    init(starter: @escaping @Sendable (RedirectorSetup) -> Void) {
        self.starter = starter
    }

    /// Starts the setup unless it was started (or settled) already.
    func start() {
        let first = state.withLock { state -> Bool in
            guard case .pending(var waiting) = state, !waiting.started else { return false }
            waiting.started = true
            state = .pending(waiting)
            return true
        }
        if first { starter(self) }
    }

    /// Whether the setup was started (or settled): a release must then wait for it.
    var started: Bool {
        state.withLock { state -> Bool in
            switch state {
            case .pending(let waiting): return waiting.started
            case .settled: return true
            }
        }
    }

    /// Ends the setup with `outcome` and resumes every waiter. Settling twice is a bug.
    func settle(_ outcome: Outcome) {
        let waiters = state.withLock { state -> [CheckedContinuation<Outcome?, Never>] in
            guard case .pending(let waiting) = state else { preconditionFailure("redirector setup settled twice") }
            state = .settled(outcome)
            return Array(waiting.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }

    /// The outcome once settled, nil while pending.
    var settled: Outcome? {
        state.withLock { state -> Outcome? in
            switch state {
            case .pending: return nil
            case .settled(let outcome): return outcome
            }
        }
    }

    /// Waits until the setup settled; nil when the calling task is cancelled first.
    func outcome() async -> Outcome? {
        let id = state.withLock { state -> UInt64? in
            guard case .pending(var waiting) = state else { return nil }
            waiting.next += 1
            state = .pending(waiting)
            return waiting.next
        }
        guard let id else { return settled }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Outcome?, Never>) in
                let now = state.withLock { state -> Outcome?? in
                    switch state {
                    case .settled(let outcome):
                        return .some(outcome)
                    case .pending(var waiting):
                        if Task.isCancelled { return .some(nil) }
                        waiting.waiters[id] = waiter
                        state = .pending(waiting)
                        return .none
                    }
                }
                if let now { waiter.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Outcome?, Never>? in
                guard case .pending(var waiting) = state else { return nil }
                let waiter = waiting.waiters.removeValue(forKey: id)
                state = .pending(waiting)
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}

/// One container's redirect (the driver's ``ScaleDownRedirect``) on its pod's redirector while
/// that is set up off the Create path (decision 0060): ``makeActivator(ports:connection:)``
/// starts and waits for the setup, then builds the container's ``PodRedirect`` and
/// ``ContainerConnections``; until then nothing is redirected or tracked, so
/// ``redirectOff(ports:)`` has nothing to do and ``activity(ports:)`` reports none (the driver
/// reads activity only once its activator exists).
final class DeferredPodRedirect: ScaleDownRedirect {
    /// What the container gets from a ready redirector.
    struct Parts: Sendable {
        /// The container's redirect on the pod's redirector.
        var redirect: PodRedirect
        /// The container's kept connections and handover listeners.
        var connections: ContainerConnections?
    }

    private enum State {
        case waiting
        case ready(Parts)
        case unavailable(String)
    }

    /// The pod's network namespace.
    let location: String
    private let setup: RedirectorSetup
    private let build: @Sendable (PodRedirector) -> Parts
    private let state = Mutex(State.waiting)

    /// A redirect for one container, on `setup`'s redirector once it is ready.
    /// - Parameters:
    ///   - location: the pod's network namespace path.
    ///   - setup: the pod's redirector setup (shared by the pod's containers).
    ///   - build: makes the container's parts from the ready redirector (no I/O).
    init(location: String, setup: RedirectorSetup, build: @escaping @Sendable (PodRedirector) -> Parts) {
        self.location = location
        self.setup = setup
        self.build = build
    }

    /// Starts the pod's setup if no container did yet, waits for it and returns the container's
    /// parts, or why there are none.
    func parts() async -> Result<Parts, ScaleDownError> {
        setup.start()
        guard let outcome = await setup.outcome() else {
            return .failure(ScaleDownError("the wait for the pod's redirector for \(location) was cancelled"))
        }
        return resolve(outcome)
    }

    /// The container's parts when the setup is ready, made once.
    private func resolve(_ outcome: RedirectorSetup.Outcome) -> Result<Parts, ScaleDownError> {
        state.withLock { state -> Result<Parts, ScaleDownError> in
            switch state {
            case .ready(let parts):
                return .success(parts)
            case .unavailable(let why):
                return .failure(ScaleDownError(why))
            case .waiting:
                switch outcome {
                case .ready(let redirector):
                    let parts = build(redirector)
                    state = .ready(parts)
                    return .success(parts)
                case .failed(let why):
                    let reason = "the pod's redirector for \(location) could not be set up: \(why)"
                    state = .unavailable(reason)
                    return .failure(ScaleDownError(reason))
                }
            }
        }
    }

    /// The container's parts if the setup is ready and they were made, else nil.
    private var ready: Parts? {
        state.withLock { state -> Parts? in
            switch state {
            case .ready(let parts): return parts
            case .waiting, .unavailable: return nil
            }
        }
    }

    /// The container's kept connections and handover listeners; nil until the redirector is ready
    /// (nothing is held or handed over before the activator exists).
    var connections: ContainerConnections? {
        if let parts = ready { return parts.connections }
        // Settled but not yet resolved by the driver (Delete after a quick start).
        if let outcome = setup.settled, case .success(let parts) = resolve(outcome) { return parts.connections }
        return nil
    }

    /// The container's parts once a setup that was started settled; nil when it was never
    /// started (no container of the pod needed the redirector), or failed.
    func partsIfStarted() async -> Parts? {
        guard setup.started else { return nil }
        return try? await parts().get()
    }

    /// Starts and waits for the pod's redirector, then ``PodRedirect/makeActivator(ports:connection:)``.
    /// - Throws: ``ScaleDownError`` naming the setup's failure (scale-down then stays off).
    func makeActivator(
        ports: [UInt16],
        connection: @escaping @Sendable () async throws -> Void
    ) async throws -> any ScaleDownActivator {
        let made = try await parts().get()
        return try await made.redirect.makeActivator(ports: ports, connection: connection)
    }

    /// ``PodRedirect/redirectOff(ports:)`` once ready; nothing before (no redirect is on).
    func redirectOff(ports: [UInt16]) throws {
        try ready?.redirect.redirectOff(ports: ports)
    }

    /// ``PodRedirect/settleRestoredListeners()`` once ready.
    func settleRestoredListeners() {
        ready?.redirect.settleRestoredListeners()
    }

    /// ``PodRedirect/hasRestoredListenersToSettle`` once ready.
    var hasRestoredListenersToSettle: Bool { ready?.redirect.hasRestoredListenersToSettle ?? false }

    /// ``PodRedirect/activity(ports:)`` once ready; none before.
    func activity(ports: [UInt16]) -> (lastActivity: ZPInstant?, openConnections: Int) {
        ready?.redirect.activity(ports: ports) ?? (nil, 0)
    }
}
