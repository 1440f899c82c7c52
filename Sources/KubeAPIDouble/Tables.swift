import Foundation
import ZPKube

/// Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), as kubectl asks for
/// first: the columns the real server prints for pods and events, a name and age for the rest.
enum Tables {
    static func columnDefinitions(_ resource: ResourceType) -> [JSON] {
        func column(
            _ name: String,
            _ type: String,
            _ description: String,
            priority: Int64 = 0,
            format: String = ""
        ) -> JSON {
            [
                "name": .string(name), "type": .string(type), "format": .string(format),
                "description": .string(description), "priority": .integer(priority),
            ]
        }
        let nameColumn = column(
            "Name",
            "string",
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            format: "name"
        )
        let ageColumn = column(
            "Age",
            "string",
            "CreationTimestamp is a timestamp representing the server time when this object was created."
        )
        switch resource.plural {
        case "pods":
            return [
                nameColumn,
                column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
                column("Status", "string", "The aggregate status of the containers in this pod."),
                column(
                    "Restarts",
                    "string",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."
                ),
                ageColumn,
                column(
                    "IP",
                    "string",
                    "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                    priority: 1
                ),
                column(
                    "Node",
                    "string",
                    "NodeName is a request to schedule this pod onto a specific node.",
                    priority: 1
                ),
                column(
                    "Nominated Node",
                    "string",
                    "nominatedNodeName is set only when this pod preempts other pods on the node.",
                    priority: 1
                ),
                column(
                    "Readiness Gates",
                    "string",
                    "If specified, all readiness gates will be evaluated for pod readiness.",
                    priority: 1
                ),
            ]
        case "events":
            return [
                column("Last Seen", "string", "Time when this Event was last observed."),
                column(
                    "Type",
                    "string",
                    "Type of this event (Normal, Warning), new types could be added in the future"
                ),
                column(
                    "Reason",
                    "string",
                    "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."
                ),
                column("Object", "string", "The object that this event is about. Mapped to the involvedObject field."),
                column("Subobject", "string", "fieldPath of the involved object.", priority: 1),
                column("Source", "string", "The component reporting this event.", priority: 1),
                column("Message", "string", "A human-readable description of the status of this operation."),
                column("First Seen", "string", "The time at which the event was first recorded.", priority: 1),
                column("Count", "string", "The number of times this event has occurred.", priority: 1),
                column("Name", "string", "Name of the event.", priority: 1),
            ]
        default:
            return [nameColumn, ageColumn]
        }
    }

    static func cells(_ resource: ResourceType, _ object: JSON, now: Date) -> [JSON] {
        let name = object[path: ["metadata", "name"]]?.stringValue ?? ""
        let age = humanAge(object[path: ["metadata", "creationTimestamp"]]?.stringValue, now: now)
        switch resource.plural {
        case "pods":
            let containers = object[path: ["spec", "containers"]]?.arrayValue ?? []
            let statuses = object[path: ["status", "containerStatuses"]]?.arrayValue ?? []
            let ready = statuses.filter { $0["ready"]?.boolValue == true }.count
            let restarts = statuses.reduce(Int64(0)) { $0 + ($1["restartCount"]?.integerValue ?? 0) }
            var status = object[path: ["status", "phase"]]?.stringValue ?? "Pending"
            if let reason = object[path: ["status", "reason"]]?.stringValue, !reason.isEmpty { status = reason }
            if object[path: ["metadata", "deletionTimestamp"]] != nil { status = "Terminating" }
            let ip = object[path: ["status", "podIP"]]?.stringValue ?? "<none>"
            let node = object[path: ["spec", "nodeName"]]?.stringValue ?? "<none>"
            let nominated = object[path: ["status", "nominatedNodeName"]]?.stringValue ?? "<none>"
            let gates = object[path: ["spec", "readinessGates"]]?.arrayValue ?? []
            return [
                .string(name), .string("\(ready)/\(containers.count)"), .string(status), .string(String(restarts)),
                .string(age), .string(ip.isEmpty ? "<none>" : ip), .string(node.isEmpty ? "<none>" : node),
                .string(nominated), .string(gates.isEmpty ? "<none>" : "0/\(gates.count)"),
            ]
        case "events":
            let last =
                object["lastTimestamp"]?.stringValue ?? object["eventTime"]?.stringValue
            let first = object["firstTimestamp"]?.stringValue ?? object["eventTime"]?.stringValue
            let involved = object["involvedObject"] ?? .object([:])
            let kind = (involved["kind"]?.stringValue ?? "").lowercased()
            let objectText = "\(kind)/\(involved["name"]?.stringValue ?? "")"
            var source =
                object[path: ["source", "component"]]?.stringValue ?? object["reportingComponent"]?.stringValue ?? ""
            if let host = object[path: ["source", "host"]]?.stringValue, !host.isEmpty { source += ", \(host)" }
            let count = object["count"]?.integerValue ?? 1
            return [
                .string(last.map { humanAge($0, now: now) } ?? "<unknown>"), .string(object["type"]?.stringValue ?? ""),
                .string(object["reason"]?.stringValue ?? ""), .string(objectText),
                .string(involved["fieldPath"]?.stringValue ?? ""), .string(source),
                .string(object["message"]?.stringValue ?? ""),
                .string(first.map { humanAge($0, now: now) } ?? "<unknown>"), .string(String(count)), .string(name),
            ]
        default:
            return [.string(name), .string(age)]
        }
    }

    /// A Table of `objects`; `includeObject` is `None`, `Metadata` (default) or `Object`.
    static func table(
        _ resource: ResourceType,
        _ objects: [JSON],
        resourceVersion: String?,
        continueToken: String? = nil,
        includeObject: String,
        withColumns: Bool = true
    ) -> JSON {
        let now = Date()
        let rows: [JSON] = objects.map { object in
            var row: JSON = ["cells": .array(cells(resource, object, now: now))]
            switch includeObject {
            case "None": break
            case "Object":
                var full = object
                full["kind"] = .string(resource.kind)
                full["apiVersion"] = "v1"
                row["object"] = full
            default:
                row["object"] = [
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"] ?? .object([:]),
                ]
            }
            return row
        }
        var metadata: JSON = [:]
        if let resourceVersion { metadata["resourceVersion"] = .string(resourceVersion) }
        if let continueToken { metadata["continue"] = .string(continueToken) }
        return [
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": withColumns ? .array(columnDefinitions(resource)) : .null, "rows": .array(rows),
        ]
    }

    /// kubectl's `HumanDuration` of the time since `timestamp`.
    static func humanAge(_ timestamp: String?, now: Date) -> String {
        guard let timestamp, let date = KubeTime.parse(timestamp) else { return "<unknown>" }
        let seconds = max(0, Int(now.timeIntervalSince(date)))
        if seconds < 120 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 { return seconds % 60 == 0 ? "\(minutes)m" : "\(minutes)m\(seconds % 60)s" }
        if minutes < 180 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 8 { return minutes % 60 == 0 ? "\(hours)h" : "\(hours)h\(minutes % 60)m" }
        if hours < 48 { return "\(hours)h" }
        if hours < 24 * 8 { return hours % 24 == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(hours % 24)h" }
        return "\(hours / 24)d"
    }
}
