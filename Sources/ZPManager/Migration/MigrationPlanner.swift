// Pure decisions of migration (decisions 0048, 0051): which containers of a deleted pod migrate,
// the Migration to create, whether a pending pod may claim one, and the status after an event.
// No I/O: the controller and the node service act on what these return.
import Foundation
import ZPCore
import ZPKube

/// Migration's pure decisions.
public enum MigrationPlanner {
    /// The pod label that ties a replacement to its predecessor (the ReplicaSet's).
    public static let podTemplateHashLabel = "pod-template-hash"

    /// A container of a pod that migrates, and how.
    public struct MigratingContainer: Sendable, Hashable {
        /// The container's name.
        public var name: String
        /// Live (`live-migrate` names it) or offline (`migrate` names it).
        public var live: Bool
    }

    /// The containers of `pod` that migrate when it is deleted: those named by `migrate` (and not
    /// `disable-checkpointing`) or `live-migrate`. Stricter than the original, which counted an
    /// annotation merely present: an empty value, or one naming no container of the pod, migrates
    /// nothing; a malformed one migrates nothing either (the shim refused to create the container).
    public static func migratingContainers(of pod: Pod) -> [MigratingContainer] {
        let annotations = pod.metadata.annotations ?? [:]
        return (pod.spec?.containers ?? []).compactMap { container in
            var all = annotations
            all[CRIAnnotation.containerName] = container.name
            guard let config = try? ContainerConfig(annotations: all), config.anyMigrationEnabled else { return nil }
            return MigratingContainer(name: container.name, live: config.liveMigrationEnabled)
        }
    }

    /// The Migration to create for `pod`, deleted on `node`: named after the pod, owned by it (with
    /// `autoGC`), the cleanup finalizer set, one entry per migrating container with its id
    /// (containers without a known id are left out). Nil when nothing migrates or the pod has no
    /// `pod-template-hash` (nothing could ever claim it).
    /// - Parameter containerIDs: container name → containerd id (from the shims, else the pod's status).
    public static func migration(for pod: Pod, node: String, containerIDs: [String: String], autoGC: Bool) -> Migration?
    {
        guard pod.metadata.deletionTimestamp != nil, let name = pod.metadata.name,
            let hash = pod.metadata.labels?[podTemplateHashLabel], !hash.isEmpty
        else { return nil }
        let migrating = migratingContainers(of: pod).filter { containerIDs[$0.name] != nil }
        guard !migrating.isEmpty else { return nil }
        var metadata = ObjectMeta(name: name, namespace: pod.metadata.namespace)
        metadata.finalizers = [Migration.cleanupFinalizer]
        if autoGC, let uid = pod.metadata.uid {
            metadata.ownerReferences = [OwnerReference(apiVersion: "v1", kind: "Pod", name: name, uid: uid)]
        }
        let spec = MigrationSpec(
            liveMigration: migrating.contains { $0.live },
            restoreReady: false,
            sourceNode: node,
            sourcePod: name,
            podTemplateHash: hash,
            containers: migrating.map { MigrationContainer(name: $0.name, id: containerIDs[$0.name]!) }
        )
        return Migration(metadata: metadata, spec: spec)
    }

    /// The first status of a new Migration: Pending per container, or Failed at once for an offline
    /// container that runs (only a scaled-down container has an image to move; a running one
    /// needs `live-migrate`).
    /// - Parameter running: the names of the containers whose process runs now.
    public static func initialStatus(_ migration: Migration, pod: Pod, running: Set<String>) -> MigrationStatus {
        let live = Set(migratingContainers(of: pod).filter(\.live).map(\.name))
        return MigrationStatus(
            containers: migration.spec.containers.map { c in
                if running.contains(c.name) && !live.contains(c.name) {
                    return MigrationContainerStatus(
                        name: c.name,
                        condition: MigrationCondition(
                            phase: .failed,
                            message: "the container runs and only live-migrate moves a running container"
                        )
                    )
                }
                return MigrationContainerStatus(name: c.name, condition: MigrationCondition(phase: .pending))
            }
        )
    }

    /// Whether `pod` (pending on `node`, not being deleted) may claim `migration`: same namespace and
    /// `pod-template-hash`, not claimed, no final phase, not its own, created for another pod.
    public static func canClaim(_ migration: Migration, pod: Pod, node: String) -> Bool {
        guard pod.metadata.deletionTimestamp == nil, pod.spec?.nodeName == node,
            pod.status?.phase == nil || pod.status?.phase == "Pending",
            let hash = pod.metadata.labels?[podTemplateHashLabel], hash == migration.spec.podTemplateHash,
            pod.metadata.namespace == migration.metadata.namespace, pod.metadata.name != migration.spec.sourcePod,
            migration.metadata.deletionTimestamp == nil, !migration.isClaimed, !migration.isFinished
        else { return false }
        return true
    }

    /// The merge patch that claims `migration` for `pod` on `node`: target node and pod, the pod
    /// appended to the owners (with `autoGC`), and the resourceVersion the decision was made on as
    /// the precondition (a second claimer gets 409 instead of overwriting the first).
    public static func claimPatch(_ migration: Migration, pod: Pod, node: String, autoGC: Bool) -> JSON {
        var metadata: JSON = ["resourceVersion": .string(migration.metadata.resourceVersion ?? "")]
        if autoGC, let uid = pod.metadata.uid, let name = pod.metadata.name {
            var owners = migration.metadata.ownerReferences ?? []
            if !owners.contains(where: { $0.uid == uid }) {
                owners.append(OwnerReference(apiVersion: "v1", kind: "Pod", name: name, uid: uid))
            }
            metadata["ownerReferences"] = .array(
                owners.map {
                    [
                        "apiVersion": .string($0.apiVersion), "kind": .string($0.kind),
                        "name": .string($0.name), "uid": .string($0.uid),
                    ]
                }
            )
        }
        return [
            "metadata": metadata, "spec": ["targetNode": .string(node), "targetPod": .string(pod.metadata.name ?? "")],
        ]
    }

    /// `status` with container `name` set by `change`, every other container as it was.
    public static func status(
        _ status: MigrationStatus?,
        setting name: String,
        _ change: (inout MigrationContainerStatus) -> Void
    ) -> MigrationStatus {
        var containers = status?.containers ?? []
        if let i = containers.firstIndex(where: { $0.name == name }) {
            change(&containers[i])
        } else {
            var entry = MigrationContainerStatus(name: name, condition: MigrationCondition(phase: .pending))
            change(&entry)
            containers.append(entry)
        }
        return MigrationStatus(containers: containers)
    }

    /// MicroTime (`2026-01-01T00:00:00.000000Z`) for a timestamp.
    public static func microTime(_ timestamp: ProtobufTimestamp) -> String {
        let date = Date(timeIntervalSince1970: TimeInterval(timestamp.seconds))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
            c.year!,
            c.month!,
            c.day!,
            c.hour!,
            c.minute!,
            c.second!,
            Int(timestamp.nanos / 1000)
        )
    }

    /// The timestamp of a MicroTime (`2026-01-01T00:00:00.123456Z`, the fraction optional); nil
    /// for anything else.
    public static func timestamp(microTime text: String) -> ProtobufTimestamp? {
        let parts = text.split(separator: ".", maxSplits: 1)
        var whole = String(parts[0])
        var micros: Int32 = 0
        if parts.count == 2 {
            let fraction = parts[1].prefix { $0.isNumber }
            guard !fraction.isEmpty, fraction.count <= 9 else { return nil }
            micros = Int32(String(fraction.prefix(6)).padding(toLength: 6, withPad: "0", startingAt: 0)) ?? 0
            whole += "Z"
        }
        guard let date = try? Date(whole, strategy: .iso8601) else { return nil }
        return ProtobufTimestamp(seconds: Int64(date.timeIntervalSince1970), nanos: micros * 1000)
    }

    /// A Go `time.Duration` string (`1.234567s`, `123.456ms`) like metav1.Duration writes it.
    public static func goDuration(nanoseconds: Int64) -> String {
        if nanoseconds < 1_000_000 { return String(format: "%.3fµs", Double(nanoseconds) / 1e3) }
        if nanoseconds < 1_000_000_000 { return String(format: "%.6gms", Double(nanoseconds) / 1e6) }
        return String(format: "%.9gs", Double(nanoseconds) / 1e9)
    }
}
