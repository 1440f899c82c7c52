// The shim's status API, `zeropod.shim.v1.Shim`: our own messages (not the original zeropod's),
// encoded by hand on ZPCore's protobuf codec. Tests/ZPAPITests/Fixtures/shim_status.proto describes
// them; the tests compare these encoders with `protoc --encode` on that file.
import ZPCore

/// The messages and method names of the shim's status service (`zeropod.shim.v1.Shim`).
public enum StatusAPI {
    /// The ttrpc service name.
    public static let service = "zeropod.shim.v1.Shim"
    /// Unary: ``ContainerRequest`` → ``ContainerStatus``.
    public static let getStatus = "GetStatus"
    /// Unary: ``Empty`` → ``ListContainersResponse``.
    public static let listContainers = "ListContainers"
    /// Server stream: ``SubscribeStatusRequest`` → ``StatusChange`` messages.
    public static let subscribeStatus = "SubscribeStatus"
    /// Unary: ``Empty`` → ``MetricsResponse``.
    public static let metrics = "Metrics"

    /// Upper bounds (seconds) of the checkpoint and restore duration histograms: the original
    /// zeropod manager's buckets, so `zeropod_*_duration_seconds` keep their `le` labels.
    public static let durationBucketBounds: [Double] = [
        0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2.5, 5, 10,
    ]
}

// MARK: - enums on the wire

extension ContainerLifecycle.Phase {
    /// The `LifecyclePhase` wire number (0 is "unspecified" and never sent for a known phase).
    public var wireNumber: Int32 {
        switch self {
        case .created: return 1
        case .running: return 2
        case .checkpointing: return 3
        case .scalingDownByKill: return 4
        case .scaledDown: return 5
        case .restoring: return 6
        case .coldStarting: return 7
        case .stopped: return 8
        }
    }

    /// The phase for a `LifecyclePhase` wire number, nil for 0 and unknown numbers.
    public init?(wireNumber: Int32) {
        guard let phase = Self.allCases.first(where: { $0.wireNumber == wireNumber }) else { return nil }
        self = phase
    }
}

extension StatusAPI {
    /// A one-off event that came with a status change (`StatusEvent`).
    public enum Event: Sendable, Hashable {
        /// CRIU finished a checkpoint that took `duration`.
        case checkpointFinished(duration: Duration)
        /// A checkpoint failed; the container keeps running.
        case checkpointFailed(reason: String)
        /// A restore finished; it took `duration` from the first connection to the running process.
        case restoreFinished(duration: Duration)
        /// A restore (or the cold start after it) failed.
        case restoreFailed(reason: String)
        /// Dry run (`zeropod.ctrox.dev/dry-run: "true"`): the idle timer expired and the container
        /// would have been scaled down now; it keeps running.
        case wouldScaleDown
        /// Dry run: a connection (or exec) came that would have restored the container now.
        case wouldRestore

        /// The `EventKind` wire number.
        var kind: Int32 {
            switch self {
            case .checkpointFinished: return 1
            case .checkpointFailed: return 2
            case .restoreFinished: return 3
            case .restoreFailed: return 4
            case .wouldScaleDown: return 5
            case .wouldRestore: return 6
            }
        }

        /// The status the original zeropod reported for this event (its one-off phases).
        public var originalStatus: ContainerLifecycle.StatusPhase {
            switch self {
            case .checkpointFinished: return .scaledDown
            case .checkpointFailed: return .checkpointFailed
            case .restoreFinished: return .running
            case .restoreFailed: return .restoreFailed
            case .wouldScaleDown, .wouldRestore: return .running
            }
        }
    }
}

extension StatusAPI.Event: ProtobufMessage {
    /// Writes `kind`, `duration_nanos` and `reason`.
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32IfNotDefault(field: 1, kind)
        switch self {
        case .checkpointFinished(let d), .restoreFinished(let d): w.writeInt64IfNotDefault(field: 2, d.nanoseconds)
        case .checkpointFailed(let r), .restoreFailed(let r): w.writeStringIfNotDefault(field: 3, r)
        case .wouldScaleDown, .wouldRestore: break
        }
    }

    /// Decodes a `StatusEvent`.
    /// - Throws: `ProtobufError.invalidValue` for an unknown or missing kind; codec errors.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let name = "zeropod.shim.v1.StatusEvent"
        var kind: Int32 = 0
        var nanos: Int64 = 0
        var reason = ""
        while let f = try r.nextField() {
            switch f.number {
            case 1: kind = try f.int32(in: name)
            case 2: nanos = try f.int64(in: name)
            case 3: reason = try f.string(in: name)
            default: break
            }
        }
        switch kind {
        case 1: self = .checkpointFinished(duration: .nanoseconds(nanos))
        case 2: self = .checkpointFailed(reason: reason)
        case 3: self = .restoreFinished(duration: .nanoseconds(nanos))
        case 4: self = .restoreFailed(reason: reason)
        case 5: self = .wouldScaleDown
        case 6: self = .wouldRestore
        default: throw .invalidValue(message: name, field: 1, value: Int64(kind))
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (s, a) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return s < 0 ? .min : .max }
        return ns.addingReportingOverflow(a / 1_000_000_000).overflow ? .max : ns + a / 1_000_000_000
    }

    /// The duration in seconds as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

// MARK: - messages

extension StatusAPI {
    /// When a checkpoint or restore last finished, and how long it took (`OperationRecord`).
    public struct Operation: ProtobufTableMessage, Equatable {
        /// Wall-clock end of the operation.
        public var finishedAt: ProtobufTimestamp
        /// How long it took.
        public var duration: Duration

        /// A record from its fields.
        public init(finishedAt: ProtobufTimestamp, duration: Duration) {
            self.finishedAt = finishedAt
            self.duration = duration
        }

        /// A record at the epoch that took no time (the wire defaults).
        public init() {
            self.init(finishedAt: ProtobufTimestamp(seconds: 0, nanos: 0), duration: .zero)
        }

        /// The fields: `finished_at` (always written), `duration_nanos`.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.OperationRecord",
            [
                .message(1, \.finishedAt),
                .durationNanoseconds(2, \.duration),
            ]
        )
    }

    /// One container as the shim sees it (`ContainerStatus`).
    public struct ContainerStatus: ProtobufTableMessage, Equatable {
        /// The containerd container id.
        public var id: String
        /// The Kubernetes container name (`io.kubernetes.cri.container-name`), empty outside Kubernetes.
        public var name: String
        /// The pod name (`io.kubernetes.cri.sandbox-name`).
        public var podName: String
        /// The pod namespace (`io.kubernetes.cri.sandbox-namespace`).
        public var podNamespace: String
        /// The pod uid (`io.kubernetes.cri.sandbox-uid`).
        public var podUID: String
        /// The lifecycle phase; nil when the peer sent one this version does not know.
        public var lifecyclePhase: ContainerLifecycle.Phase?
        /// The container's (last) init pid; 0 before it started.
        public var pid: Int32
        /// When the container entered its phase.
        public var phaseSince: ProtobufTimestamp?
        /// The last checkpoint that finished.
        public var lastCheckpoint: Operation?
        /// The last restore that finished.
        public var lastRestore: Operation?
        /// Failed checkpoints so far.
        public var checkpointErrors: UInt64
        /// Failed restores so far.
        public var restoreErrors: UInt64
        /// The reason of the last failed checkpoint or restore.
        public var lastError: String

        /// A status with an id and defaults for everything else.
        public init(
            id: String,
            name: String = "",
            podName: String = "",
            podNamespace: String = "",
            podUID: String = "",
            lifecyclePhase: ContainerLifecycle.Phase? = .created,
            pid: Int32 = 0,
            phaseSince: ProtobufTimestamp? = nil,
            lastCheckpoint: Operation? = nil,
            lastRestore: Operation? = nil,
            checkpointErrors: UInt64 = 0,
            restoreErrors: UInt64 = 0,
            lastError: String = ""
        ) {
            self.id = id
            self.name = name
            self.podName = podName
            self.podNamespace = podNamespace
            self.podUID = podUID
            self.lifecyclePhase = lifecyclePhase
            self.pid = pid
            self.phaseSince = phaseSince
            self.lastCheckpoint = lastCheckpoint
            self.lastRestore = lastRestore
            self.checkpointErrors = checkpointErrors
            self.restoreErrors = restoreErrors
            self.lastError = lastError
        }

        /// The phase in the original zeropod's terms (`ContainerPhase`, field 5): RUNNING until a
        /// checkpoint finished, SCALED_DOWN until a restore finished; `SCALED_DOWN` (0) before start.
        public var phase: ContainerLifecycle.StatusPhase { lifecyclePhase?.originalStatus ?? .scaledDown }

        /// A status with every field at its wire default (no phase): the starting point for decoding.
        public init() {
            self.init(id: "", lifecyclePhase: nil)
        }

        /// The fields. Field 5 is derived from field 6 when written and not read.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.ContainerStatus",
            [
                .string(1, \.id),
                .string(2, \.name),
                .string(3, \.podName),
                .string(4, \.podNamespace),
                .custom(
                    5,
                    write: { m, n, w in w.writeInt32IfNotDefault(field: n, m.phase.rawValue) },
                    read: { _, _, _ in }
                ),
                .lifecyclePhase(6, \.lifecyclePhase),
                .int32(7, \.pid),
                .message(8, \.phaseSince),
                .message(9, \.lastCheckpoint),
                .message(10, \.lastRestore),
                .uint64(11, \.checkpointErrors),
                .uint64(12, \.restoreErrors),
                .string(13, \.lastError),
                .string(14, \.podUID),
            ]
        )
    }

    /// One entry of a status subscription (`StatusChange`).
    public struct StatusChange: ProtobufTableMessage, Equatable {
        /// The board's change counter: +1 for every change, the same for every subscriber.
        public var sequence: UInt64
        /// Changes this subscriber lost right before this one because it read too slowly.
        public var missed: UInt64
        /// When the change happened.
        public var time: ProtobufTimestamp
        /// The container's status after the change.
        public var status: ContainerStatus
        /// The one-off event that came with the change, if any.
        public var event: Event?
        /// The container was removed from the shim (deleted); `status` is its last status.
        public var removed: Bool
        /// Part of the snapshot sent first on request, not a change.
        public var snapshot: Bool

        /// A change from its fields.
        public init(
            sequence: UInt64,
            missed: UInt64 = 0,
            time: ProtobufTimestamp,
            status: ContainerStatus,
            event: Event? = nil,
            removed: Bool = false,
            snapshot: Bool = false
        ) {
            self.sequence = sequence
            self.missed = missed
            self.time = time
            self.status = status
            self.event = event
            self.removed = removed
            self.snapshot = snapshot
        }

        /// A change with every field at its wire default: the starting point for decoding.
        public init() {
            self.init(sequence: 0, time: ProtobufTimestamp(seconds: 0, nanos: 0), status: ContainerStatus())
        }

        /// The fields; `time` and `status` are always written.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.StatusChange",
            [
                .uint64(1, \.sequence),
                .uint64(2, \.missed),
                .message(3, \.time),
                .message(4, \.status),
                .message(5, \.event),
                .bool(6, \.removed),
                .bool(7, \.snapshot),
            ]
        )
    }

    /// Observations of one duration histogram, cumulative like Prometheus's (`Histogram`).
    public struct Histogram: ProtobufMessage, Equatable {
        /// Upper bounds in seconds, ascending; `+Inf` is implied.
        public var upperBounds: [Double]
        /// Per bound, the observations less than or equal to it (cumulative).
        public var cumulativeCounts: [UInt64]
        /// All observations (the `+Inf` bucket).
        public var count: UInt64
        /// The sum of all observations in seconds.
        public var sum: Double

        /// An empty histogram over `upperBounds`.
        public init(upperBounds: [Double] = StatusAPI.durationBucketBounds) {
            self.upperBounds = upperBounds
            cumulativeCounts = Array(repeating: 0, count: upperBounds.count)
            count = 0
            sum = 0
        }

        /// Adds one observation.
        public mutating func observe(_ duration: Duration) {
            let s = duration.seconds
            for (i, bound) in upperBounds.enumerated() where s <= bound { cumulativeCounts[i] += 1 }
            count += 1
            sum += s
        }

        /// Writes bounds and counts packed, then count and sum.
        public func encode(into w: inout ProtobufWriter) {
            w.writePackedFixed64(field: 1, upperBounds.map(\.bitPattern))
            w.writePackedVarints(field: 2, cumulativeCounts)
            w.writeUInt64IfNotDefault(field: 3, count)
            if sum != 0 { w.writeDouble(field: 4, sum) }
        }

        /// Decodes a `Histogram` (packed or unpacked repeated fields); unknown fields are skipped.
        /// - Throws: `ProtobufError` for malformed input.
        public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
            let n = "zeropod.shim.v1.Histogram"
            self.init(upperBounds: [])
            while let f = try r.nextField() {
                switch f.number {
                case 1: upperBounds += try f.packedFixed64(in: n).map(Double.init(bitPattern:))
                case 2: cumulativeCounts += try f.packedVarints(in: n)
                case 3: count = try f.uint64(in: n)
                case 4: sum = try f.double(in: n)
                default: break
                }
            }
        }
    }

    /// What the manager needs for the original's metrics, per container (`ContainerMetrics`).
    ///
    /// Cumulative, not deltas: every caller sees the same totals, so two scrapers do not split the
    /// observations between them (the original cleared its values on every `Metrics` call).
    public struct ContainerMetrics: ProtobufTableMessage, Equatable {
        /// The containerd container id.
        public var id: String
        /// Label `container`.
        public var name: String
        /// Label `pod`.
        public var podName: String
        /// Label `namespace`.
        public var podNamespace: String
        /// `zeropod_running`: the original's phase is RUNNING.
        public var running: Bool
        /// `zeropod_last_checkpoint_time` (unix time; the original exports nanoseconds).
        public var lastCheckpointTime: ProtobufTimestamp?
        /// `zeropod_last_restore_time`.
        public var lastRestoreTime: ProtobufTimestamp?
        /// `zeropod_checkpoint_duration_seconds`.
        public var checkpointDuration: Histogram
        /// `zeropod_restore_duration_seconds`.
        public var restoreDuration: Histogram
        /// `zeropod_checkpoint_errors_total`.
        public var checkpointErrorsTotal: UInt64
        /// `zeropod_restore_errors_total`.
        public var restoreErrorsTotal: UInt64
        /// `zeropod_dry_run_scale_downs_total`: scale-downs a dry run skipped.
        public var dryRunScaleDownsTotal: UInt64
        /// `zeropod_dry_run_would_restores_total`: restores a dry run skipped.
        public var dryRunWouldRestoresTotal: UInt64

        /// Metrics with empty histograms and zero counters.
        public init(
            id: String,
            name: String = "",
            podName: String = "",
            podNamespace: String = "",
            running: Bool = false,
            lastCheckpointTime: ProtobufTimestamp? = nil,
            lastRestoreTime: ProtobufTimestamp? = nil,
            checkpointDuration: Histogram = Histogram(),
            restoreDuration: Histogram = Histogram(),
            checkpointErrorsTotal: UInt64 = 0,
            restoreErrorsTotal: UInt64 = 0,
            dryRunScaleDownsTotal: UInt64 = 0,
            dryRunWouldRestoresTotal: UInt64 = 0
        ) {
            self.id = id
            self.name = name
            self.podName = podName
            self.podNamespace = podNamespace
            self.running = running
            self.lastCheckpointTime = lastCheckpointTime
            self.lastRestoreTime = lastRestoreTime
            self.checkpointDuration = checkpointDuration
            self.restoreDuration = restoreDuration
            self.checkpointErrorsTotal = checkpointErrorsTotal
            self.restoreErrorsTotal = restoreErrorsTotal
            self.dryRunScaleDownsTotal = dryRunScaleDownsTotal
            self.dryRunWouldRestoresTotal = dryRunWouldRestoresTotal
        }

        /// Metrics with every field at its wire default (histograms without buckets): the
        /// starting point for decoding.
        public init() {
            self.init(
                id: "",
                checkpointDuration: Histogram(upperBounds: []),
                restoreDuration: Histogram(upperBounds: [])
            )
        }

        /// The fields; both histograms are always written.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.ContainerMetrics",
            [
                .string(1, \.id),
                .string(2, \.name),
                .string(3, \.podName),
                .string(4, \.podNamespace),
                .bool(5, \.running),
                .message(6, \.lastCheckpointTime),
                .message(7, \.lastRestoreTime),
                .message(8, \.checkpointDuration),
                .message(9, \.restoreDuration),
                .uint64(10, \.checkpointErrorsTotal),
                .uint64(11, \.restoreErrorsTotal),
                .uint64(12, \.dryRunScaleDownsTotal),
                .uint64(13, \.dryRunWouldRestoresTotal),
            ]
        )
    }

    /// `ContainerRequest`: names one container.
    public struct ContainerRequest: ProtobufTableMessage, Equatable {
        /// The containerd container id.
        public var id = ""

        /// A request naming no container.
        public init() {}

        /// A request for container `id`.
        public init(id: String) { self.id = id }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.ContainerRequest",
            [
                .string(1, \.id)
            ]
        )
    }

    /// `SubscribeStatusRequest`.
    public struct SubscribeStatusRequest: ProtobufTableMessage, Equatable {
        /// Send every container's current status first (entries flagged `snapshot`).
        public var initialSnapshot = false

        /// A request without the initial snapshot.
        public init() {}

        /// A request, with or without the initial snapshot.
        public init(initialSnapshot: Bool) { self.initialSnapshot = initialSnapshot }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.SubscribeStatusRequest",
            [
                .bool(1, \.initialSnapshot)
            ]
        )
    }

    /// `ListContainersResponse`.
    public struct ListContainersResponse: ProtobufTableMessage, Equatable {
        /// Every container the shim serves, ordered by id.
        public var containers: [ContainerStatus] = []

        /// A response listing no container.
        public init() {}

        /// A response listing `containers`.
        public init(containers: [ContainerStatus]) { self.containers = containers }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.ListContainersResponse",
            [
                .messages(1, \.containers)
            ]
        )
    }

    /// `MetricsResponse`.
    public struct MetricsResponse: ProtobufTableMessage, Equatable {
        /// One entry per container, ordered by id.
        public var containers: [ContainerMetrics] = []

        /// A response with no container.
        public init() {}

        /// A response with `containers`.
        public init(containers: [ContainerMetrics]) { self.containers = containers }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.MetricsResponse",
            [
                .messages(1, \.containers)
            ]
        )
    }

    /// `Empty`: the request of `ListContainers` and `Metrics`.
    public struct Empty: ProtobufTableMessage, Equatable {
        /// The empty message.
        public init() {}

        /// No fields: every field read is skipped.
        public static let fields = ProtobufFieldTable<Self>("zeropod.shim.v1.Empty", [])
    }
}

// MARK: - field rules of the status API

extension ProtobufFieldRule {
    /// An `int64` of nanoseconds holding a `Duration` (saturating), omitted when zero.
    static func durationNanoseconds(_ number: Int, _ path: ProtobufFieldPath<Message, Duration>) -> Self {
        .custom(
            number,
            write: { m, n, w in w.writeInt64IfNotDefault(field: n, m[keyPath: path].nanoseconds) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = .nanoseconds(try f.int64(in: name)) }
        )
    }

    /// A `LifecyclePhase` enum (``ContainerLifecycle/Phase/wireNumber``), omitted when nil; an
    /// unknown number reads as nil.
    static func lifecyclePhase(_ number: Int, _ path: ProtobufFieldPath<Message, ContainerLifecycle.Phase?>) -> Self {
        .custom(
            number,
            write: { m, n, w in w.writeInt32IfNotDefault(field: n, m[keyPath: path]?.wireNumber ?? 0) },
            read: { m, f, name throws(ProtobufError) in
                m[keyPath: path] = ContainerLifecycle.Phase(wireNumber: try f.int32(in: name))
            }
        )
    }
}
