// The wake call of the shim's status service (docs/decisions/0011-wake-groups.md): one shim asks
// another to bring a scaled-down member of their wake group back. Our own messages, encoded by hand
// on ZPCore's protobuf codec; Tests/ZPAPITests/Fixtures/shim_status.proto describes them and
// ZPAPITests compare these encoders with `protoc --encode`.
import ZPCore

extension StatusAPI {
    /// Unary: ``WakeRequest`` → ``WakeResponse``. Restores a scaled-down container as if a
    /// connection came, and answers once it runs; a no-op for a container that runs, is being
    /// woken or stopped.
    public static let wake = "Wake"

    /// What a wake call did (`WakeOutcome`).
    public enum WakeOutcome: Int32, Sendable, CaseIterable {
        /// The container was scaled down (or being scaled down) and runs again now.
        case woken = 1
        /// A restore or cold start was already under way; nothing was added to it.
        case alreadyWaking = 2
        /// The container runs (or was created and not started): nothing to do.
        case notScaledDown = 3
        /// The container stopped: it is not started again.
        case stopped = 4
    }

    /// `WakeRequest`: which container to wake, and who asks (for the logs).
    public struct WakeRequest: ProtobufTableMessage, Equatable {
        /// The containerd container id served by the called shim.
        public var id = ""
        /// The member whose connection or exec caused the wake, as `<group>/<container id>`.
        public var origin = ""

        /// A request naming no container.
        public init() {}

        /// A request to wake `id` on behalf of `origin`.
        public init(id: String, origin: String = "") {
            self.id = id
            self.origin = origin
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.shim.v1.WakeRequest",
            [
                .string(1, \.id),
                .string(2, \.origin),
            ]
        )
    }

    /// `WakeResponse`: the outcome, the phase after it and how long the called shim waited.
    public struct WakeResponse: ProtobufMessage, Equatable {
        /// What the call did.
        public var outcome: WakeOutcome
        /// The container's phase when the answer was sent; nil for a phase this version does not know.
        public var lifecyclePhase: ContainerLifecycle.Phase?
        /// How long the called shim waited for the container to run (zero unless `woken`).
        public var waited: Duration

        /// A response from its fields.
        public init(outcome: WakeOutcome, lifecyclePhase: ContainerLifecycle.Phase?, waited: Duration = .zero) {
            self.outcome = outcome
            self.lifecyclePhase = lifecyclePhase
            self.waited = waited
        }

        /// Writes `outcome`, `lifecycle_phase` and `waited_nanos`.
        public func encode(into w: inout ProtobufWriter) {
            w.writeInt32IfNotDefault(field: 1, outcome.rawValue)
            w.writeInt32IfNotDefault(field: 2, lifecyclePhase?.wireNumber ?? 0)
            w.writeInt64IfNotDefault(field: 3, waited.nanoseconds)
        }

        /// Decodes the message; unknown fields are skipped.
        /// - Throws: `ProtobufError.invalidValue` for a missing or unknown outcome; codec errors.
        public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
            let name = "zeropod.shim.v1.WakeResponse"
            var outcome: Int32 = 0
            var phase: Int32 = 0
            var nanos: Int64 = 0
            while let f = try r.nextField() {
                switch f.number {
                case 1: outcome = try f.int32(in: name)
                case 2: phase = try f.int32(in: name)
                case 3: nanos = try f.int64(in: name)
                default: break
                }
            }
            guard let known = WakeOutcome(rawValue: outcome) else {
                throw .invalidValue(message: name, field: 1, value: Int64(outcome))
            }
            self.outcome = known
            lifecyclePhase = ContainerLifecycle.Phase(wireNumber: phase)
            waited = .nanoseconds(nanos)
        }
    }
}
