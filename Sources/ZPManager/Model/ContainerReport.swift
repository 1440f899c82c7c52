// What the manager knows about one container, in its own terms: the planners (labels, events,
// resize) and the metrics take these values, never the wire messages, so they are tested without
// a shim. `ShimReports` (Shims/) turns ZPAPI's status messages into them.
import ZPCore

/// The pod a container belongs to (from the CRI annotations the shim reads).
public struct PodReference: Sendable, Hashable, CustomStringConvertible {
    /// The pod's namespace.
    public var namespace: String
    /// The pod's name.
    public var name: String
    /// The pod's uid; empty when the shim did not know it.
    public var uid: String

    /// A reference from its parts.
    public init(namespace: String, name: String, uid: String = "") {
        self.namespace = namespace
        self.name = name
        self.uid = uid
    }

    /// `namespace/name`.
    public var description: String { "\(namespace)/\(name)" }
}

/// Identifies one container on the node: the shim's status socket and the containerd id.
public struct ContainerKey: Sendable, Hashable, CustomStringConvertible {
    /// The status socket path of the shim that serves the container.
    public var shim: String
    /// The containerd container id.
    public var id: String

    /// A key from its parts.
    public init(shim: String, id: String) {
        self.shim = shim
        self.id = id
    }

    /// The container id (ids are unique on a node; the shim is only needed to tell shims apart).
    public var description: String { id }
}

/// One container as its shim last reported it.
public struct ContainerReport: Sendable, Hashable {
    /// The containerd container id.
    public var id: String
    /// The Kubernetes container name; empty for a pod sandbox or a container outside Kubernetes.
    public var name: String
    /// The pod; nil outside Kubernetes.
    public var pod: PodReference?
    /// The status in the original zeropod's terms (RUNNING or SCALED_DOWN; STOPPING once stopped).
    public var phase: ContainerLifecycle.StatusPhase
    /// The finer lifecycle phase's name (`CHECKPOINTING`, `RESTORING`, …) for logs.
    public var lifecyclePhase: String
    /// Failed checkpoints so far (cumulative, from the shim).
    public var checkpointErrors: UInt64
    /// Failed restores so far (cumulative, from the shim).
    public var restoreErrors: UInt64

    /// A report from its fields.
    public init(
        id: String,
        name: String,
        pod: PodReference?,
        phase: ContainerLifecycle.StatusPhase,
        lifecyclePhase: String = "",
        checkpointErrors: UInt64 = 0,
        restoreErrors: UInt64 = 0
    ) {
        self.id = id
        self.name = name
        self.pod = pod
        self.phase = phase
        self.lifecyclePhase = lifecyclePhase
        self.checkpointErrors = checkpointErrors
        self.restoreErrors = restoreErrors
    }

    /// Whether the manager writes anything to Kubernetes for this container: it has a container
    /// name and a pod (a pod sandbox and containers started outside Kubernetes have neither).
    public var isKubernetesContainer: Bool {
        guard let pod, !name.isEmpty else { return false }
        return !pod.name.isEmpty && !pod.namespace.isEmpty
    }
}

/// A one-off occurrence that came with a status change: what becomes a Kubernetes event and a
/// log line.
public enum StatusOccurrence: Sendable, Hashable {
    /// A checkpoint finished: the container is scaled down.
    case scaledDown(duration: Duration)
    /// A restore finished: the container runs again.
    case restored(duration: Duration)
    /// A checkpoint failed; the container keeps running.
    case checkpointFailed(reason: String)
    /// A restore (or the cold start after it) failed.
    case restoreFailed(reason: String)
    /// Dry run: the container would have been scaled down now.
    case wouldScaleDown
    /// Dry run: the container would have been restored now.
    case wouldRestore

    /// The Kubernetes event reason (the original's for the first four).
    public var reason: String {
        switch self {
        case .scaledDown: return "Scaled down"
        case .restored: return "Running"
        case .checkpointFailed: return "Checkpoint failed"
        case .restoreFailed: return "Restore failed"
        case .wouldScaleDown: return "Would scale down"
        case .wouldRestore: return "Would restore"
        }
    }

    /// A short stable name of the kind, used in event names and logs.
    public var kindName: String {
        switch self {
        case .scaledDown: return "scaled-down"
        case .restored: return "running"
        case .checkpointFailed: return "checkpoint-failed"
        case .restoreFailed: return "restore-failed"
        case .wouldScaleDown: return "would-scale-down"
        case .wouldRestore: return "would-restore"
        }
    }

    /// How long the operation took, for the checkpoint and restore that finished.
    public var duration: Duration? {
        switch self {
        case .scaledDown(let d), .restored(let d): return d
        case .checkpointFailed, .restoreFailed, .wouldScaleDown, .wouldRestore: return nil
        }
    }
}

/// One status change of one container: what the shim said, with the occurrence it carried.
public struct StatusUpdate: Sendable, Hashable {
    /// The container after the change.
    public var report: ContainerReport
    /// The occurrence, if the change carried one.
    public var occurrence: StatusOccurrence?
    /// When the change happened (unix nanoseconds, the shim's clock).
    public var time: Int64
    /// The shim's change counter (the same for every subscriber of that shim); 0 for updates the
    /// manager derived itself (from a snapshot).
    public var sequence: UInt64

    /// An update from its fields.
    public init(report: ContainerReport, occurrence: StatusOccurrence?, time: Int64, sequence: UInt64) {
        self.report = report
        self.occurrence = occurrence
        self.time = time
        self.sequence = sequence
    }
}
