// A shim's status service without a shim (tests and the manager benchmark): the real ttrpc server
// (ZPTTRPC) and the real wire messages (ZPAPI) in front of an in-memory board the test drives.
// Subscriptions behave like the shim's (decision 0008): an optional snapshot, then every change
// with a board-wide sequence; metrics are cumulative.
import Logging
import NIOPosix
import Synchronization
import ZPAPI
import ZPCore
import ZPTTRPC

/// An in-memory status board served as `zeropod.shim.v1.Shim` on a unix socket.
public final class FakeStatusShim: Sendable {
    private struct Entry {
        var status: StatusAPI.ContainerStatus
        var checkpoint = StatusAPI.Histogram()
        var restore = StatusAPI.Histogram()
        var dryRunScaleDowns: UInt64 = 0
        var dryRunWouldRestores: UInt64 = 0
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var sequence: UInt64 = 0
        var subscribers: [Int: AsyncStream<StatusAPI.StatusChange>.Continuation] = [:]
        var nextSubscriber = 0
        var clock: Int64 = 1_790_000_000_000_000_000
    }

    private let state = Mutex(State())

    /// An empty board.
    public init() {}

    /// Open subscriptions.
    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// The board's sequence (changes so far).
    public var sequence: UInt64 { state.withLock { $0.sequence } }

    /// Adds or replaces a container (published as a change).
    public func set(_ status: StatusAPI.ContainerStatus, event: StatusAPI.Event? = nil, at time: Int64? = nil) {
        state.withLock { s in
            var entry = s.entries[status.id] ?? Entry(status: status)
            entry.status = status
            s.clock = time ?? (s.clock + 1_000_000)
            let stamp = ProtobufTimestamp(unixNanoseconds: s.clock)
            if let event {
                switch event {
                case .checkpointFinished(let d):
                    entry.status.lastCheckpoint = StatusAPI.Operation(finishedAt: stamp, duration: d)
                    entry.checkpoint.observe(d)
                case .restoreFinished(let d):
                    entry.status.lastRestore = StatusAPI.Operation(finishedAt: stamp, duration: d)
                    entry.restore.observe(d)
                case .checkpointFailed(let reason):
                    entry.status.checkpointErrors += 1
                    entry.status.lastError = reason
                case .restoreFailed(let reason):
                    entry.status.restoreErrors += 1
                    entry.status.lastError = reason
                case .wouldScaleDown: entry.dryRunScaleDowns += 1
                case .wouldRestore: entry.dryRunWouldRestores += 1
                }
            }
            entry.status.phaseSince = stamp
            s.entries[status.id] = entry
            s.sequence += 1
            let change = StatusAPI.StatusChange(sequence: s.sequence, time: stamp, status: entry.status, event: event)
            for c in s.subscribers.values { c.yield(change) }
        }
    }

    /// Moves container `id` to `phase`, with an event: SCALED_DOWN after a checkpoint of
    /// `duration`, RUNNING after a restore.
    public func transition(_ id: String, to phase: ContainerLifecycle.Phase, event: StatusAPI.Event? = nil) {
        guard var status = state.withLock({ $0.entries[id]?.status }) else { return }
        status.lifecyclePhase = phase
        set(status, event: event)
    }

    /// Changes a container without publishing the change (as if a subscriber had missed it).
    public func setSilently(_ id: String, phase: ContainerLifecycle.Phase, event: StatusAPI.Event? = nil) {
        let subscribers = state.withLock { s -> [Int: AsyncStream<StatusAPI.StatusChange>.Continuation] in
            defer { s.subscribers = [:] }
            return s.subscribers
        }
        transition(id, to: phase, event: event)
        state.withLock { $0.subscribers = subscribers }
    }

    /// Removes a container (published with `removed`).
    public func remove(_ id: String) {
        state.withLock { s in
            guard let entry = s.entries.removeValue(forKey: id) else { return }
            s.sequence += 1
            s.clock += 1_000_000
            let change = StatusAPI.StatusChange(
                sequence: s.sequence,
                time: ProtobufTimestamp(unixNanoseconds: s.clock),
                status: entry.status,
                removed: true
            )
            for c in s.subscribers.values { c.yield(change) }
        }
    }

    /// Ends every subscription (as a shim that shuts down does).
    public func endSubscriptions() {
        let subscribers = state.withLock { s -> [AsyncStream<StatusAPI.StatusChange>.Continuation] in
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        for c in subscribers { c.finish() }
    }

    /// The router of the four status methods.
    public func router() -> TTRPCRouter {
        var router = TTRPCRouter()
        router.register(service: StatusAPI.service, method: StatusAPI.getStatus) { call in
            let request = try StatusAPI.ContainerRequest(decoding: call.payload)
            guard let status = self.state.withLock({ $0.entries[request.id]?.status }) else {
                throw TTRPCStatusError(.notFound, "container \(request.id) not found")
            }
            return status.encoded()
        }
        router.register(service: StatusAPI.service, method: StatusAPI.listContainers) { _ in
            StatusAPI.ListContainersResponse(
                containers: self.state.withLock { $0.entries.values.map(\.status) }.sorted { $0.id < $1.id }
            )
            .encoded()
        }
        router.register(service: StatusAPI.service, method: StatusAPI.metrics) { _ in
            let entries = self.state.withLock { Array($0.entries.values) }
            return StatusAPI.MetricsResponse(
                containers: entries.map { e in
                    let s = e.status
                    return StatusAPI.ContainerMetrics(
                        id: s.id,
                        name: s.name,
                        podName: s.podName,
                        podNamespace: s.podNamespace,
                        running: s.phase == .running,
                        lastCheckpointTime: s.lastCheckpoint?.finishedAt,
                        lastRestoreTime: s.lastRestore?.finishedAt,
                        checkpointDuration: e.checkpoint,
                        restoreDuration: e.restore,
                        checkpointErrorsTotal: s.checkpointErrors,
                        restoreErrorsTotal: s.restoreErrors,
                        dryRunScaleDownsTotal: e.dryRunScaleDowns,
                        dryRunWouldRestoresTotal: e.dryRunWouldRestores
                    )
                }.sorted { $0.id < $1.id }
            ).encoded()
        }
        router.registerServerStream(service: StatusAPI.service, method: StatusAPI.subscribeStatus) { call, writer in
            let request = try StatusAPI.SubscribeStatusRequest(decoding: call.payload)
            let (stream, continuation) = AsyncStream.makeStream(
                of: StatusAPI.StatusChange.self,
                bufferingPolicy: .bufferingNewest(128)
            )
            let id = self.state.withLock { s -> Int in
                s.nextSubscriber += 1
                s.subscribers[s.nextSubscriber] = continuation
                if request.initialSnapshot {
                    for entry in s.entries.values.sorted(by: { $0.status.id < $1.status.id }) {
                        continuation.yield(
                            StatusAPI.StatusChange(
                                sequence: s.sequence,
                                time: ProtobufTimestamp(unixNanoseconds: s.clock),
                                status: entry.status,
                                snapshot: true
                            )
                        )
                    }
                }
                return s.nextSubscriber
            }
            defer { _ = self.state.withLock { $0.subscribers.removeValue(forKey: id) } }
            for await change in stream {
                try await writer.send(change.encoded())
            }
        }
        return router
    }

    /// Serves the board on `path` until the task is cancelled.
    /// - Parameter onListening: Called once the socket accepts connections.
    public func serve(at path: String, onListening: @Sendable () -> Void = {}) async throws {
        let server = TTRPCServer(
            router: router(),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "fake-shim")
        )
        try await server.run(unixSocketPath: path, onListening: onListening)
    }
}
