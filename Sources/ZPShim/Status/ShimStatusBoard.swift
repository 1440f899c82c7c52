import Synchronization
import ZPAPI
import ZPCore
import ZPSystem

/// The shim's record of its containers for the manager: phase, pid, pod labels, last checkpoint
/// and restore, error counts and duration histograms, and the stream of changes.
///
/// The scale-to-zero driver calls ``update(id:phase:pid:event:)`` on every phase change and with
/// every checkpoint/restore result; the status service reads it. Each subscriber gets a buffer of
/// its own (unlike the original's one shared 128-slot channel, which split the changes between
/// subscribers and dropped new ones silently when full): every subscriber sees every change, and a
/// subscriber that reads too slowly loses its oldest unread changes and is told how many with the
/// next change it reads (``StatusAPI/StatusChange/missed``).
public final class ShimStatusBoard: Sendable {
    /// How many unread changes one subscriber may hold by default (the original's channel size).
    public static let defaultSubscriberCapacity = 128

    private struct Entry {
        var status: StatusAPI.ContainerStatus
        var checkpointDuration = StatusAPI.Histogram()
        var restoreDuration = StatusAPI.Histogram()
        /// Dry-run decisions so far (decision 0031): scale-downs and restores that were skipped.
        var dryRunScaleDowns: UInt64 = 0
        var dryRunWouldRestores: UInt64 = 0
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var sequence: UInt64 = 0
        var subscribers: [UInt64: AsyncStream<StatusAPI.StatusChange>.Continuation] = [:]
        var nextSubscriberID: UInt64 = 0
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> Int64

    /// An empty board.
    /// - Parameter now: The wall clock in nanoseconds since the Unix epoch (`CLOCK_REALTIME` when
    ///   nil; tests pass their own).
    public init(now: (@Sendable () -> Int64)? = nil) {
        self.now = now ?? { SystemClock.realtimeNanoseconds() }
    }

    // MARK: writing (the driver)

    /// Adds a container (or renames an existing one's labels) in phase `created`, taking its names
    /// from the CRI annotations `io.kubernetes.cri.container-name`, `…sandbox-name`,
    /// `…sandbox-namespace` and `…sandbox-uid`.
    ///
    /// - Parameters:
    ///   - id: The containerd container id.
    ///   - annotations: The OCI spec's annotations.
    public func register(id: String, annotations: [String: String]) {
        change(id: id, removing: false) { status in
            status.name = annotations["io.kubernetes.cri.container-name"] ?? status.name
            status.podName = annotations["io.kubernetes.cri.sandbox-name"] ?? status.podName
            status.podNamespace = annotations["io.kubernetes.cri.sandbox-namespace"] ?? status.podNamespace
            status.podUID = annotations["io.kubernetes.cri.sandbox-uid"] ?? status.podUID
        }
    }

    /// Records a phase change, a new pid and/or a checkpoint/restore result, and tells every
    /// subscriber. A call that changes nothing (same phase, same pid, no event) is not published.
    /// An unknown id is added on the fly (without pod labels).
    ///
    /// - Parameters:
    ///   - id: The containerd container id.
    ///   - phase: The new phase, or nil to keep it.
    ///   - pid: The new init pid, or nil to keep it.
    ///   - event: A checkpoint/restore result: updates the last operation, the histograms and the
    ///     error counters.
    public func update(
        id: String,
        phase: ContainerLifecycle.Phase? = nil,
        pid: Int32? = nil,
        event: StatusAPI.Event? = nil
    ) {
        change(id: id, removing: false, event: event) { status in
            if let phase { status.lifecyclePhase = phase }
            if let pid { status.pid = pid }
        }
    }

    /// Removes a container (task deleted) and publishes its last status flagged `removed`.
    /// - Parameter id: The containerd container id; unknown ids are ignored.
    public func remove(id: String) {
        change(id: id, removing: true) { _ in }
    }

    /// The one place that changes an entry and publishes the change, under the lock so that every
    /// subscriber receives changes in sequence order. `AsyncStream.Continuation.yield` takes only
    /// the stream's own lock and never calls back into the board, so it is safe here; `finish()`
    /// (which runs `onTermination`, which takes this lock) is never called under it.
    private func change(
        id: String,
        removing: Bool,
        event: StatusAPI.Event? = nil,
        _ body: (inout StatusAPI.ContainerStatus) -> Void
    ) {
        let time = now()
        let stamp = ProtobufTimestamp(unixNanoseconds: time)
        state.withLock { state in
            if removing && state.entries[id] == nil { return }
            var entry = state.entries[id] ?? Entry(status: StatusAPI.ContainerStatus(id: id, phaseSince: stamp))
            let before = entry.status
            body(&entry.status)
            if entry.status.lifecyclePhase != before.lifecyclePhase { entry.status.phaseSince = stamp }
            if let event { Self.apply(event, at: stamp, to: &entry) }
            let isNew = state.entries[id] == nil
            guard isNew || removing || event != nil || entry.status != before else { return }
            if removing {
                state.entries[id] = nil
            } else {
                state.entries[id] = entry
            }
            state.sequence += 1
            let published = StatusAPI.StatusChange(
                sequence: state.sequence,
                time: stamp,
                status: entry.status,
                event: event,
                removed: removing
            )
            for continuation in state.subscribers.values { continuation.yield(published) }
        }
    }

    private static func apply(_ event: StatusAPI.Event, at stamp: ProtobufTimestamp, to entry: inout Entry) {
        switch event {
        case .checkpointFinished(let duration):
            entry.status.lastCheckpoint = StatusAPI.Operation(finishedAt: stamp, duration: duration)
            entry.checkpointDuration.observe(duration)
        case .restoreFinished(let duration):
            entry.status.lastRestore = StatusAPI.Operation(finishedAt: stamp, duration: duration)
            entry.restoreDuration.observe(duration)
        case .checkpointFailed(let reason):
            entry.status.checkpointErrors += 1
            entry.status.lastError = "checkpoint: " + reason
        case .restoreFailed(let reason):
            entry.status.restoreErrors += 1
            entry.status.lastError = "restore: " + reason
        case .wouldScaleDown:
            entry.dryRunScaleDowns += 1
        case .wouldRestore:
            entry.dryRunWouldRestores += 1
        }
    }

    // MARK: reading (the service)

    /// The status of container `id`, or nil when the shim does not know it.
    public func status(id: String) -> StatusAPI.ContainerStatus? {
        state.withLock { $0.entries[id]?.status }
    }

    /// Every container's status, ordered by id.
    public func list() -> [StatusAPI.ContainerStatus] {
        state.withLock { $0.entries.values.map(\.status) }.sorted { $0.id < $1.id }
    }

    /// Every container's metrics (cumulative since the shim started), ordered by id.
    public func metrics() -> [StatusAPI.ContainerMetrics] {
        let entries = state.withLock { Array($0.entries.values) }
        return entries.map { entry in
            let s = entry.status
            return StatusAPI.ContainerMetrics(
                id: s.id,
                name: s.name,
                podName: s.podName,
                podNamespace: s.podNamespace,
                running: s.lifecyclePhase?.originalStatus == .running,
                lastCheckpointTime: s.lastCheckpoint?.finishedAt,
                lastRestoreTime: s.lastRestore?.finishedAt,
                checkpointDuration: entry.checkpointDuration,
                restoreDuration: entry.restoreDuration,
                checkpointErrorsTotal: s.checkpointErrors,
                restoreErrorsTotal: s.restoreErrors,
                dryRunScaleDownsTotal: entry.dryRunScaleDowns,
                dryRunWouldRestoresTotal: entry.dryRunWouldRestores
            )
        }.sorted { $0.id < $1.id }
    }

    /// The number of open subscriptions.
    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// Subscribes to every change from now on.
    ///
    /// - Parameters:
    ///   - capacity: How many unread changes this subscriber may hold; when it is full the oldest
    ///     is dropped and the next change read reports the loss in `missed`.
    ///   - initialSnapshot: Yield every container's current status first (flagged `snapshot`),
    ///     consistent with the first change that follows.
    /// - Returns: The changes; the subscription ends when the consumer stops iterating or its task
    ///   is cancelled.
    public func subscribe(
        capacity: Int = ShimStatusBoard.defaultSubscriberCapacity,
        initialSnapshot: Bool = false
    ) -> StatusSubscription {
        precondition(capacity > 0, "subscriber capacity must be positive")
        let (stream, continuation) = AsyncStream.makeStream(
            of: StatusAPI.StatusChange.self,
            bufferingPolicy: .bufferingNewest(capacity)
        )
        let stamp = ProtobufTimestamp(unixNanoseconds: now())
        let (id, start, snapshot) = state.withLock { state in
            let id = state.nextSubscriberID
            state.nextSubscriberID += 1
            state.subscribers[id] = continuation
            let snapshot =
                initialSnapshot
                ? state.entries.values.map {
                    StatusAPI.StatusChange(sequence: state.sequence, time: stamp, status: $0.status, snapshot: true)
                }
                : []
            return (id, state.sequence, snapshot)
        }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(id) }
        return StatusSubscription(
            changes: stream,
            startSequence: start,
            snapshot: snapshot.sorted { $0.status.id < $1.status.id }
        )
    }

    /// Ends every subscription (the shim is shutting down).
    public func finishSubscriptions() {
        let all = state.withLock { state in
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in all { continuation.finish() }
    }

    private func unsubscribe(_ id: UInt64) {
        // The continuation is released after the lock (its last reference may go with it).
        let removed = state.withLock { $0.subscribers.removeValue(forKey: id) }
        _ = removed
    }
}

/// One subscriber's changes: the optional snapshot first, then every change in order, each with
/// the number of changes lost right before it.
public struct StatusSubscription: AsyncSequence, Sendable {
    /// Each element is a change (or a snapshot entry).
    public typealias Element = StatusAPI.StatusChange

    private let changes: AsyncStream<StatusAPI.StatusChange>
    private let startSequence: UInt64
    private let snapshot: [StatusAPI.StatusChange]

    init(changes: AsyncStream<StatusAPI.StatusChange>, startSequence: UInt64, snapshot: [StatusAPI.StatusChange]) {
        self.changes = changes
        self.startSequence = startSequence
        self.snapshot = snapshot
    }

    /// Iterates the snapshot, then the changes.
    public func makeAsyncIterator() -> Iterator {
        Iterator(changes: changes.makeAsyncIterator(), lastSequence: startSequence, snapshot: snapshot[...])
    }

    /// Fills in ``StatusAPI/StatusChange/missed`` from gaps in the board's sequence numbers.
    public struct Iterator: AsyncIteratorProtocol {
        var changes: AsyncStream<StatusAPI.StatusChange>.Iterator
        var lastSequence: UInt64
        var snapshot: ArraySlice<StatusAPI.StatusChange>

        /// The next snapshot entry or change; nil when the subscription ended.
        public mutating func next() async -> StatusAPI.StatusChange? {
            if let first = snapshot.popFirst() { return first }
            guard var change = await changes.next() else { return nil }
            change.missed = change.sequence &- lastSequence &- 1
            lastSequence = change.sequence
            return change
        }
    }
}
