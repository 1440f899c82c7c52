// The pure planner of the manager's Kubernetes events (`-status-events`): the original's fields
// (kubernetes.md §2.2), and a name derived from what happened, so that sending the same event
// again (a retry after a timeout whose request did reach the server, a stream reconnected after a
// change the manager had already reported) is refused as AlreadyExists instead of duplicated.
import Foundation
import ZPKube

/// Who reports the events: the original's component and this node.
public struct EventReporter: Sendable, Hashable {
    /// `reportingComponent` and `source.component`.
    public static let component = "zeropod.ctrox.dev/manager"
    /// The prefix of every event name (the original's `generateName`).
    public static let namePrefix = "zeropod-status-event-"

    /// `reportingInstance`: the host name, else the node name.
    public var instance: String
    /// `source.host`: the node name.
    public var nodeName: String

    /// A reporter.
    public init(instance: String, nodeName: String) {
        self.instance = instance
        self.nodeName = nodeName
    }
}

/// Builds the `core/v1 Event` of a status occurrence (pure).
public enum EventPlanner {
    /// The event for `occurrence` of `container` in `pod`.
    ///
    /// - Parameters:
    ///   - occurrence: What happened.
    ///   - container: The Kubernetes container name.
    ///   - containerID: The containerd id (part of the event's identity).
    ///   - pod: The pod as the API server showed it (uid and resourceVersion go into
    ///     `involvedObject`).
    ///   - time: When it happened (unix nanoseconds).
    ///   - identity: What tells this occurrence apart from another of the same kind of the same
    ///     container (the shim's change sequence, or the operation's end time): it becomes part of
    ///     the name.
    ///   - reporter: The node and instance.
    public static func event(
        _ occurrence: StatusOccurrence,
        container: String,
        containerID: String,
        pod: Pod,
        time: Int64,
        identity: String,
        reporter: EventReporter
    ) -> Event {
        let date = Date(timeIntervalSince1970: Double(time) / 1e9)
        let namespace = pod.metadata.namespace ?? "default"
        return Event(
            metadata: ObjectMeta(
                name: name(
                    podUID: pod.metadata.uid ?? "",
                    containerID: containerID,
                    kind: occurrence.kindName,
                    identity: identity
                ),
                generateName: EventReporter.namePrefix,
                namespace: namespace
            ),
            involvedObject: ObjectReference(
                apiVersion: "v1",
                kind: "Pod",
                name: pod.metadata.name,
                namespace: namespace,
                uid: pod.metadata.uid,
                resourceVersion: pod.metadata.resourceVersion,
                fieldPath: "spec.containers{\(container)}"
            ),
            reason: occurrence.reason,
            message: message(occurrence, container: container),
            source: EventSource(component: EventReporter.component, host: reporter.nodeName),
            firstTimestamp: KubeTime.time(date),
            lastTimestamp: KubeTime.time(date),
            count: 1,
            type: "Normal",
            eventTime: KubeTime.microTime(date),
            action: occurrence.reason,
            reportingComponent: EventReporter.component,
            reportingInstance: reporter.instance
        )
    }

    /// The human message.
    public static func message(_ occurrence: StatusOccurrence, container: String) -> String {
        switch occurrence {
        case .scaledDown(let d): return "Scaled down container \(container) in \(text(d))"
        case .restored(let d): return "Restored container \(container) in \(text(d))"
        case .checkpointFailed(let reason): return "Checkpointing container \(container) failed: \(reason)"
        case .restoreFailed(let reason): return "Restoring container \(container) failed: \(reason)"
        case .wouldScaleDown: return "Dry run: container \(container) would have been scaled down"
        case .wouldRestore: return "Dry run: container \(container) would have been restored"
        }
    }

    /// `zeropod-status-event-<16 hex>`: a hash (FNV-1a, 64 bit) of pod uid, container id, kind and
    /// identity. Deterministic, so a repeated POST of the same occurrence gets `409 AlreadyExists`.
    public static func name(podUID: String, containerID: String, kind: String, identity: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(podUID)|\(containerID)|\(kind)|\(identity)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return EventReporter.namePrefix + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// A duration as Go prints one (`312.5ms`, `1.2s`), as the original's messages show them.
    public static func text(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let nanos = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
        if nanos >= 1e9 { return format(nanos / 1e9) + "s" }
        if nanos >= 1e6 { return format(nanos / 1e6) + "ms" }
        if nanos >= 1e3 { return format(nanos / 1e3) + "µs" }
        return format(nanos) + "ns"
    }

    private static func format(_ value: Double) -> String {
        let rounded = (value * 1000).rounded() / 1000
        if rounded == rounded.rounded() { return String(Int64(rounded)) }
        var text = String(rounded)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }
}
