/// `runtime.zeropod.ctrox.dev/v1 Migration`: a container's checkpoint moving from a deleted pod to
/// its replacement (the original zeropod's custom resource, config/components/migration/crd.yaml).
/// The manager writes it with merge patches only (decision 0051).
public struct Migration: KubeObject, Hashable {
    /// `apiVersion` (`runtime.zeropod.ctrox.dev/v1`).
    public var apiVersion: String?
    /// `kind` (`Migration`).
    public var kind: String?
    /// `metadata`: named after the source pod, in its namespace.
    public var metadata: ObjectMeta
    /// `spec`.
    public var spec: MigrationSpec
    /// `status`.
    public var status: MigrationStatus?

    /// A Migration (`apiVersion` and `kind` set).
    public init(metadata: ObjectMeta, spec: MigrationSpec, status: MigrationStatus? = nil) {
        apiVersion = "runtime.zeropod.ctrox.dev/v1"
        kind = "Migration"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    /// The API resource.
    public static let resource = KubeResource(
        group: "runtime.zeropod.ctrox.dev",
        version: "v1",
        plural: "migrations",
        namespaced: true
    )

    /// The finalizer the source node removes after deleting the images (the original's name).
    public static let cleanupFinalizer = "migration.runtime.zeropod.ctrox.dev/checkpoint-cleanup"
}

/// `spec` of a Migration.
public struct MigrationSpec: Codable, Sendable, Hashable {
    /// Whether the container moves live (memory pages on demand).
    public var liveMigration: Bool
    /// Set by the target node once its shim waits for the image.
    public var restoreReady: Bool
    /// The node of the deleted pod.
    public var sourceNode: String
    /// The node of the replacement, set when claimed.
    public var targetNode: String?
    /// The deleted pod.
    public var sourcePod: String?
    /// The replacement, set when claimed.
    public var targetPod: String?
    /// The source pod's `pod-template-hash` label: the only criterion a replacement must match.
    public var podTemplateHash: String
    /// The migrated containers.
    public var containers: [MigrationContainer]

    /// A spec.
    public init(
        liveMigration: Bool = false,
        restoreReady: Bool = false,
        sourceNode: String,
        targetNode: String? = nil,
        sourcePod: String? = nil,
        targetPod: String? = nil,
        podTemplateHash: String,
        containers: [MigrationContainer]
    ) {
        self.liveMigration = liveMigration
        self.restoreReady = restoreReady
        self.sourceNode = sourceNode
        self.targetNode = targetNode
        self.sourcePod = sourcePod
        self.targetPod = targetPod
        self.podTemplateHash = podTemplateHash
        self.containers = containers
    }
}

/// One container of `spec.containers`.
public struct MigrationContainer: Codable, Sendable, Hashable {
    /// The container's name (the list's key).
    public var name: String
    /// The source container's id (64 hex digits).
    public var id: String
    /// Where the target pulls the image (the source manager's node service).
    public var imageServer: MigrationServer?
    /// Where the target's lazy-pages daemon fetches memory (live migration).
    public var pageServer: MigrationServer?
    /// The container's ports.
    public var ports: [Int32]?
    /// zeropod-swift: `sha256:<hex>` of the image archive (checked by the target).
    public var imageDigest: String?
    /// zeropod-swift: the archive's size in bytes.
    public var imageSize: Int64?

    /// A container.
    public init(
        name: String,
        id: String,
        imageServer: MigrationServer? = nil,
        pageServer: MigrationServer? = nil,
        ports: [Int32]? = nil,
        imageDigest: String? = nil,
        imageSize: Int64? = nil
    ) {
        self.name = name
        self.id = id
        self.imageServer = imageServer
        self.pageServer = pageServer
        self.ports = ports
        self.imageDigest = imageDigest
        self.imageSize = imageSize
    }
}

/// `host` and `port` of a server.
public struct MigrationServer: Codable, Sendable, Hashable {
    /// The address (a pod IP).
    public var host: String
    /// The port.
    public var port: Int32

    /// A server address.
    public init(host: String, port: Int32) {
        self.host = host
        self.port = port
    }
}

/// `status` of a Migration.
public struct MigrationStatus: Codable, Sendable, Hashable {
    /// One entry per migrated container.
    public var containers: [MigrationContainerStatus]

    /// A status.
    public init(containers: [MigrationContainerStatus]) {
        self.containers = containers
    }
}

/// One container of `status.containers`.
public struct MigrationContainerStatus: Codable, Sendable, Hashable {
    /// The container's name (the list's key).
    public var name: String
    /// The phase.
    public var condition: MigrationCondition
    /// When the source stopped serving (MicroTime).
    public var pausedAt: String?
    /// When the target's restore finished (MicroTime; live migrations).
    public var restoredAt: String?
    /// `restoredAt − pausedAt` as a Go duration (live migrations).
    public var migrationDuration: String?

    /// A container status.
    public init(
        name: String,
        condition: MigrationCondition,
        pausedAt: String? = nil,
        restoredAt: String? = nil,
        migrationDuration: String? = nil
    ) {
        self.name = name
        self.condition = condition
        self.pausedAt = pausedAt
        self.restoredAt = restoredAt
        self.migrationDuration = migrationDuration
    }
}

/// `condition` of a container status.
public struct MigrationCondition: Codable, Sendable, Hashable {
    /// The phase.
    public var phase: MigrationPhase
    /// zeropod-swift: why it failed or was not claimed.
    public var message: String?

    /// A condition.
    public init(phase: MigrationPhase, message: String? = nil) {
        self.phase = phase
        self.message = message
    }
}

/// The phases of a migrated container (the original's).
public enum MigrationPhase: String, Codable, Sendable, Hashable, CaseIterable {
    /// Created; no target yet, or the target waits.
    case pending = "Pending"
    /// The source handed the image over; the target pulls it.
    case running = "Running"
    /// The target created the container from the image. Final.
    case completed = "Completed"
    /// It did not work; the target started from scratch (or the source stopped as usual). Final.
    case failed = "Failed"
    /// No target claimed it in time; the source stopped as usual. Final.
    case unclaimed = "Unclaimed"

    /// Whether nothing follows this phase.
    public var isFinal: Bool {
        switch self {
        case .completed, .failed, .unclaimed: return true
        case .pending, .running: return false
        }
    }
}

extension Migration {
    /// Claimed: a target node is set, or a container is Unclaimed (the original's `Claimed()`).
    public var isClaimed: Bool {
        spec.targetNode.map { !$0.isEmpty } == true
            || (status?.containers.contains { $0.condition.phase == .unclaimed } ?? false)
    }

    /// The status of container `name`, if any.
    public func containerStatus(_ name: String) -> MigrationContainerStatus? {
        status?.containers.first { $0.name == name }
    }

    /// Whether every container's phase is final.
    public var isFinished: Bool {
        guard let containers = status?.containers, !containers.isEmpty else { return false }
        return containers.allSatisfy { $0.condition.phase.isFinal }
    }
}
