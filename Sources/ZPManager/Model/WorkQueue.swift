// The manager's two queues between the shims and the API server, with client-go's workqueue
// semantics: a pod marked dirty ten times is reconciled once; a pod being reconciled is not handed
// to a second worker, and if it was marked dirty meanwhile it comes back once the first worker is
// done; a failed pod comes back after a delay. Memory is bounded by the number of pods (the dirty
// set) plus a fixed number of pending events (the oldest are dropped, counted and logged).
import Synchronization

/// A pod by namespace and name.
public struct PodKey: Sendable, Hashable, CustomStringConvertible, Comparable {
    /// The namespace.
    public var namespace: String
    /// The name.
    public var name: String

    /// A key from its parts.
    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    /// `namespace/name`.
    public var description: String { "\(namespace)/\(name)" }

    /// Orders by namespace, then name.
    public static func < (a: PodKey, b: PodKey) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
}

/// An event waiting to be written.
public struct PendingEvent: Sendable, Hashable {
    /// What happened.
    public var occurrence: StatusOccurrence
    /// The Kubernetes container name.
    public var container: String
    /// The containerd id.
    public var containerID: String
    /// The pod.
    public var pod: PodKey
    /// The pod's uid as the shim knows it (empty if unknown).
    public var podUID: String
    /// When it happened (unix nanoseconds).
    public var time: Int64
    /// What tells it apart from another occurrence of the same kind (part of the event name).
    public var identity: String
    /// Attempts so far.
    public var attempts: Int

    /// An event from its fields.
    public init(
        occurrence: StatusOccurrence,
        container: String,
        containerID: String,
        pod: PodKey,
        podUID: String,
        time: Int64,
        identity: String,
        attempts: Int = 0
    ) {
        self.occurrence = occurrence
        self.container = container
        self.containerID = containerID
        self.pod = pod
        self.podUID = podUID
        self.time = time
        self.identity = identity
        self.attempts = attempts
    }
}

/// The dirty pods and pending events, shared by the shim side (producers) and the Kubernetes
/// writers (consumers).
public final class WorkQueue: Sendable {
    private struct State {
        var dirty: [PodKey] = []
        var dirtySet: Set<PodKey> = []
        var processing: Set<PodKey> = []
        var redirty: Set<PodKey> = []
        var delayed: [PodKey: ContinuousClock.Instant] = [:]
        var podWaiters: [CheckedContinuation<PodKey?, Never>] = []
        var events: [PendingEvent] = []
        var eventHead = 0
        var eventWaiter: CheckedContinuation<PendingEvent?, Never>?
        var droppedEvents = 0
        var finished = false
    }

    private let state = Mutex(State())
    /// The most events kept waiting; the oldest is dropped when a new one arrives at the limit.
    public let eventCapacity: Int

    /// A queue holding at most `eventCapacity` pending events.
    public init(eventCapacity: Int = 1024) {
        self.eventCapacity = eventCapacity
    }

    // MARK: pods

    /// Marks pods dirty (to be reconciled).
    public func markDirty(_ keys: some Sequence<PodKey>) {
        let wake = state.withLock { s -> [(CheckedContinuation<PodKey?, Never>, PodKey)] in
            for key in keys {
                if s.processing.contains(key) {
                    s.redirty.insert(key)
                } else if s.dirtySet.insert(key).inserted {
                    s.delayed[key] = nil
                    s.dirty.append(key)
                }
            }
            return handOut(&s)
        }
        for (waiter, key) in wake { waiter.resume(returning: key) }
    }

    /// Marks one pod dirty.
    public func markDirty(_ key: PodKey) { markDirty(CollectionOfOne(key)) }

    /// The next dirty pod not being reconciled by another worker (it is then "processing" until
    /// ``done(_:retryAfter:)``); nil once the queue is finished.
    public func nextPod() async -> PodKey? {
        await withCheckedContinuation { (continuation: CheckedContinuation<PodKey?, Never>) in
            let ready = state.withLock { s -> PodKey?? in
                if s.finished { return .some(nil) }
                if let key = takeDirty(&s) { return .some(key) }
                s.podWaiters.append(continuation)
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// A worker finished `key`: it comes back at once if it was marked dirty meanwhile, after
    /// `retryAfter` if the attempt failed.
    public func done(_ key: PodKey, retryAfter: Duration? = nil) {
        let wake = state.withLock { s -> [(CheckedContinuation<PodKey?, Never>, PodKey)] in
            s.processing.remove(key)
            if s.redirty.remove(key) != nil {
                if s.dirtySet.insert(key).inserted { s.dirty.append(key) }
            } else if let retryAfter {
                s.delayed[key] = .now + retryAfter
            }
            return handOut(&s)
        }
        for (waiter, key) in wake { waiter.resume(returning: key) }
    }

    /// Moves failed pods whose delay is over back to the dirty set; returns how many.
    @discardableResult
    public func promoteDueRetries(now: ContinuousClock.Instant = .now) -> Int {
        var due: [PodKey] = []
        state.withLock { s in
            for (key, at) in s.delayed where at <= now { due.append(key) }
            for key in due { s.delayed[key] = nil }
        }
        if !due.isEmpty { markDirty(due.sorted()) }
        return due.count
    }

    /// Pods waiting, being reconciled, or waiting for a retry (for tests and statistics).
    public var pendingPods: (dirty: Int, processing: Int, delayed: Int) {
        state.withLock { ($0.dirty.count, $0.processing.count, $0.delayed.count) }
    }

    private func takeDirty(_ s: inout State) -> PodKey? {
        guard !s.dirty.isEmpty else { return nil }
        let key = s.dirty.removeFirst()
        s.dirtySet.remove(key)
        s.processing.insert(key)
        return key
    }

    private func handOut(_ s: inout State) -> [(CheckedContinuation<PodKey?, Never>, PodKey)] {
        var result: [(CheckedContinuation<PodKey?, Never>, PodKey)] = []
        while !s.podWaiters.isEmpty, let key = takeDirty(&s) {
            result.append((s.podWaiters.removeFirst(), key))
        }
        return result
    }

    // MARK: events

    /// Adds an event; at capacity the oldest waiting event is dropped (and counted).
    /// - Returns: the dropped event, if one was.
    @discardableResult
    public func enqueue(_ event: PendingEvent) -> PendingEvent? {
        let (waiter, dropped) = state.withLock { s -> (CheckedContinuation<PendingEvent?, Never>?, PendingEvent?) in
            if let waiter = s.eventWaiter {
                s.eventWaiter = nil
                return (waiter, nil)
            }
            var dropped: PendingEvent?
            if s.events.count - s.eventHead >= eventCapacity {
                dropped = s.events[s.eventHead]
                s.eventHead += 1
                s.droppedEvents += 1
            }
            s.events.append(event)
            if s.eventHead > 64, s.eventHead * 2 > s.events.count {
                s.events.removeFirst(s.eventHead)
                s.eventHead = 0
            }
            return (nil, dropped)
        }
        waiter?.resume(returning: event)
        return dropped
    }

    /// The next event (one consumer); nil once finished.
    public func nextEvent() async -> PendingEvent? {
        await withCheckedContinuation { (continuation: CheckedContinuation<PendingEvent?, Never>) in
            let ready = state.withLock { s -> PendingEvent?? in
                if s.eventHead < s.events.count {
                    let event = s.events[s.eventHead]
                    s.eventHead += 1
                    return .some(event)
                }
                if s.finished { return .some(nil) }
                precondition(s.eventWaiter == nil, "WorkQueue.nextEvent() has one consumer")
                s.eventWaiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Events waiting, and events dropped because the queue was full.
    public var eventCounts: (pending: Int, dropped: Int) {
        state.withLock { ($0.events.count - $0.eventHead, $0.droppedEvents) }
    }

    /// Ends the queue: waiting consumers get nil.
    public func finish() {
        let (pods, event) = state.withLock {
            s -> ([CheckedContinuation<PodKey?, Never>], CheckedContinuation<PendingEvent?, Never>?) in
            s.finished = true
            let pods = s.podWaiters
            s.podWaiters = []
            let event = s.eventWaiter
            s.eventWaiter = nil
            return (pods, event)
        }
        for waiter in pods { waiter.resume(returning: nil) }
        event?.resume(returning: nil)
    }
}
