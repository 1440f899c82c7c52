import ZPKube

/// One field error, rendered like the server's `field.Error`.
struct FieldError: Equatable {
    enum Kind: String {
        case required = "FieldValueRequired"
        case invalid = "FieldValueInvalid"
        case forbidden = "FieldValueForbidden"
        case duplicate = "FieldValueDuplicate"
        case tooLong = "FieldValueTooLong"
        case notSupported = "FieldValueNotSupported"
    }

    var kind: Kind
    var field: String
    var value: String?
    var detail: String

    static func required(_ field: String, _ detail: String = "") -> FieldError {
        FieldError(kind: .required, field: field, value: nil, detail: detail)
    }
    static func invalid(_ field: String, _ value: String, _ detail: String) -> FieldError {
        FieldError(kind: .invalid, field: field, value: value, detail: detail)
    }
    static func forbidden(_ field: String, _ detail: String) -> FieldError {
        FieldError(kind: .forbidden, field: field, value: nil, detail: detail)
    }

    /// The cause's message (without the field).
    var message: String {
        switch kind {
        case .required: return detail.isEmpty ? "Required value" : "Required value: \(detail)"
        case .invalid: return "Invalid value: \(quoted(value ?? ""))" + (detail.isEmpty ? "" : ": \(detail)")
        case .forbidden: return "Forbidden: \(detail)"
        case .duplicate: return value.map { "Duplicate value: \(quoted($0))" } ?? "Duplicate value: \(detail)"
        case .tooLong: return "Too long: \(detail)"
        case .notSupported: return "Unsupported value: \(value ?? ""): supported values: \(detail)"
        }
    }

    /// `field: message`.
    var text: String { "\(field): \(message)" }

    private func quoted(_ text: String) -> String { JSON.string(text).text }
}

/// The server's validation rules for the objects this double serves (a subset, see decision 0021).
enum Validation {
    // MARK: names, labels, annotations

    static func isDNSLabel(_ text: String) -> Bool {
        guard !text.isEmpty, text.count <= 63 else { return false }
        let bytes = Array(text.utf8)
        func ok(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        guard ok(bytes.first!), ok(bytes.last!) else { return false }
        return bytes.allSatisfy { ok($0) || $0 == UInt8(ascii: "-") }
    }

    static func isDNSSubdomain(_ text: String) -> Bool {
        guard !text.isEmpty, text.count <= 253 else { return false }
        return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy {
            let part = String($0)
            guard !part.isEmpty else { return false }
            let bytes = Array(part.utf8)
            func ok(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
            return ok(bytes.first!) && ok(bytes.last!) && bytes.allSatisfy { ok($0) || $0 == UInt8(ascii: "-") }
        }
    }

    /// A qualified name's name part: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
    static func qualifiedNamePartProblem(_ name: String) -> String? {
        if name.isEmpty { return "name part must be non-empty" }
        if name.count > 63 { return "name part must be no more than 63 characters" }
        let bytes = Array(name.utf8)
        func alnum(_ b: UInt8) -> Bool {
            (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39)
        }
        if !alnum(bytes.first!) || !alnum(bytes.last!)
            || !bytes.allSatisfy({
                alnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
            })
        {
            return
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        }
        return nil
    }

    /// Problems of a label or annotation key (`prefix/name`), nil when valid.
    static func labelKeyProblem(_ key: String) -> String? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            return qualifiedNamePartProblem(key)
        case 2:
            if parts[0].isEmpty { return "prefix part must be non-empty" }
            if !isDNSSubdomain(String(parts[0])) {
                return
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            }
            return qualifiedNamePartProblem(String(parts[1]))
        default:
            return
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        }
    }

    /// Problems of a label value, nil when valid.
    static func labelValueProblem(_ value: String) -> String? {
        if value.isEmpty { return nil }
        if value.count > 63 { return "must be no more than 63 characters" }
        if qualifiedNamePartProblem(value) != nil {
            return
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        }
        return nil
    }

    static func validateMetadata(_ object: JSON, namespaced: Bool, errors: inout [FieldError]) {
        let metadata = object["metadata"] ?? .object([:])
        let name = metadata["name"]?.stringValue ?? ""
        let generateName = metadata["generateName"]?.stringValue ?? ""
        if name.isEmpty, generateName.isEmpty {
            errors.append(.required("metadata.name", "name or generateName is required"))
        } else if !name.isEmpty, !isDNSSubdomain(name) {
            errors.append(
                .invalid(
                    "metadata.name",
                    name,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                )
            )
        }
        if case .object(let labels)? = metadata["labels"] {
            for key in labels.keys.sorted() {
                if let problem = labelKeyProblem(key) {
                    errors.append(.invalid("metadata.labels", key, problem))
                }
                guard case .string(let value)? = labels[key] else {
                    errors.append(.invalid("metadata.labels", key, "label values must be strings"))
                    continue
                }
                if let problem = labelValueProblem(value) {
                    errors.append(.invalid("metadata.labels", value, problem))
                }
            }
        }
        if case .object(let annotations)? = metadata["annotations"] {
            var total = 0
            for key in annotations.keys.sorted() {
                if let problem = labelKeyProblem(key.lowercased()) {
                    errors.append(.invalid("metadata.annotations", key, problem))
                }
                total += key.utf8.count + (annotations[key]?.stringValue?.utf8.count ?? 0)
            }
            if total > 256 * 1024 {
                errors.append(
                    FieldError(
                        kind: .tooLong,
                        field: "metadata.annotations",
                        value: nil,
                        detail: "may not be more than 262144 bytes"
                    )
                )
            }
        }
    }

    // MARK: pods

    /// The QoS class of a pod spec: Guaranteed, Burstable or BestEffort.
    static func qosClass(_ pod: JSON) -> String {
        let containers =
            (pod[path: ["spec", "containers"]]?.arrayValue ?? [])
            + (pod[path: ["spec", "initContainers"]]?.arrayValue ?? [])
        var anySetting = false
        var guaranteed = true
        for container in containers {
            let requests = container[path: ["resources", "requests"]]?.objectValue ?? [:]
            let limits = container[path: ["resources", "limits"]]?.objectValue ?? [:]
            for resource in ["cpu", "memory"] {
                let request = requests[resource]?.stringValue.flatMap(Quantity.value)
                let limit = limits[resource]?.stringValue.flatMap(Quantity.value)
                if (request ?? 0) > 0 || (limit ?? 0) > 0 { anySetting = true }
                guard let limit, limit > 0 else {
                    guaranteed = false
                    continue
                }
                if let request, request != limit { guaranteed = false }
            }
        }
        if !anySetting { return "BestEffort" }
        return guaranteed ? "Guaranteed" : "Burstable"
    }

    /// Quantities that do not parse: the server refuses these while decoding (400).
    static func badQuantity(_ pod: JSON) -> String? {
        for list in ["containers", "initContainers"] {
            for container in pod[path: ["spec", list]]?.arrayValue ?? [] {
                for kind in ["requests", "limits"] {
                    for (_, value) in container[path: ["resources", kind]]?.objectValue ?? [:] {
                        guard let text = value.stringValue ?? value.integerValue.map({ String($0) }),
                            Quantity.value(text) != nil
                        else {
                            return
                                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                        }
                    }
                }
            }
        }
        return nil
    }

    static func validateResources(_ container: JSON, field: String, errors: inout [FieldError]) {
        let requests = container[path: ["resources", "requests"]]?.objectValue ?? [:]
        let limits = container[path: ["resources", "limits"]]?.objectValue ?? [:]
        for (kind, map) in [("requests", requests), ("limits", limits)] {
            for name in map.keys.sorted() {
                let text = map[name]?.stringValue ?? ""
                if let value = Quantity.value(text), value < 0 {
                    errors.append(
                        .invalid("\(field).resources.\(kind)[\(name)]", text, "must be greater than or equal to 0")
                    )
                }
            }
        }
        for name in requests.keys.sorted() {
            guard let requestText = requests[name]?.stringValue, let request = Quantity.value(requestText),
                let limitText = limits[name]?.stringValue, let limit = Quantity.value(limitText)
            else { continue }
            if request > limit {
                errors.append(
                    .invalid(
                        "\(field).resources.requests",
                        requestText,
                        "must be less than or equal to \(name) limit of \(limitText)"
                    )
                )
            }
        }
    }

    static func validatePodCreate(_ pod: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        validateMetadata(pod, namespaced: true, errors: &errors)
        let containers = pod[path: ["spec", "containers"]]?.arrayValue ?? []
        if containers.isEmpty { errors.append(.required("spec.containers")) }
        var names: Set<String> = []
        for (index, container) in containers.enumerated() {
            let field = "spec.containers[\(index)]"
            let name = container["name"]?.stringValue ?? ""
            if name.isEmpty {
                errors.append(.required("\(field).name"))
            } else if !isDNSLabel(name) {
                errors.append(
                    .invalid(
                        "\(field).name",
                        name,
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    )
                )
            } else if !names.insert(name).inserted {
                errors.append(FieldError(kind: .duplicate, field: "\(field).name", value: name, detail: ""))
            }
            if (container["image"]?.stringValue ?? "").isEmpty { errors.append(.required("\(field).image")) }
            validateResources(container, field: field, errors: &errors)
        }
        return errors
    }

    static let podUpdateForbidden =
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"

    /// A plain update of a pod (PUT/PATCH of the pod itself, status already reset).
    /// - Parameter resourcesMutable: whether container cpu/memory may change here (servers ≤ 1.31
    ///   with in-place scaling); from 1.33 only the `resize` subresource may change them.
    static func validatePodUpdate(new: JSON, old: JSON, resourcesMutable: Bool) -> [FieldError] {
        var errors: [FieldError] = []
        validateMetadata(new, namespaced: true, errors: &errors)
        for (index, container) in (new[path: ["spec", "containers"]]?.arrayValue ?? []).enumerated() {
            if (container["image"]?.stringValue ?? "").isEmpty {
                errors.append(.required("spec.containers[\(index)].image"))
            }
            validateResources(container, field: "spec.containers[\(index)]", errors: &errors)
        }
        // The old spec with every mutable field taken from the new one: any other difference is forbidden.
        var allowed = old["spec"] ?? .object([:])
        let newSpec = new["spec"] ?? .object([:])
        for key in ["activeDeadlineSeconds", "terminationGracePeriodSeconds"] { allowed[key] = newSpec[key] }
        if case .array(let oldTolerations)? = allowed["tolerations"],
            case .array(let newTolerations)? = newSpec["tolerations"],
            oldTolerations.allSatisfy(newTolerations.contains)
        {
            allowed["tolerations"] = newSpec["tolerations"]
        } else if allowed["tolerations"] == nil {
            allowed["tolerations"] = newSpec["tolerations"]
        }
        for list in ["containers", "initContainers"] {
            guard case .array(var oldContainers)? = allowed[list], case .array(let newContainers)? = newSpec[list],
                oldContainers.count == newContainers.count
            else { continue }
            for index in oldContainers.indices where oldContainers[index]["name"] == newContainers[index]["name"] {
                oldContainers[index]["image"] = newContainers[index]["image"]
                if resourcesMutable { oldContainers[index]["resources"] = newContainers[index]["resources"] }
            }
            allowed[list] = .array(oldContainers)
        }
        if allowed != newSpec {
            errors.append(.forbidden("spec", podUpdateForbidden))
        } else if resourcesMutable, qosClass(new) != qosClass(old) {
            errors.append(.invalid("metadata", qosClass(old), "Pod QoS is immutable"))
        }
        return errors
    }

    /// What the `resize` subresource keeps of an update (the server's `dropNonResizeUpdates`): the
    /// containers' `resources` and `resizePolicy`; everything else is reset to the old pod, unless
    /// containers were added, removed, reordered or renamed (left for validation to refuse).
    static func dropNonResizeUpdates(new: JSON, old: JSON) -> JSON {
        let newContainers = new[path: ["spec", "containers"]]?.arrayValue ?? []
        let oldContainers = old[path: ["spec", "containers"]]?.arrayValue ?? []
        guard newContainers.count == oldContainers.count,
            zip(newContainers, oldContainers).allSatisfy({ $0["name"] == $1["name"] })
        else { return new }
        var merged = oldContainers
        for index in merged.indices {
            merged[index]["resources"] = newContainers[index]["resources"]
            merged[index]["resizePolicy"] = newContainers[index]["resizePolicy"]
        }
        var result = old
        result[path: ["spec", "containers"]] = .array(merged)
        // ResetObjectMetaForStatus: metadata stays as it was (the store sets resourceVersion).
        return result
    }

    /// The `resize` subresource's validation (after ``dropNonResizeUpdates(new:old:)``).
    static func validatePodResize(new: JSON, old: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        let newContainers = new[path: ["spec", "containers"]]?.arrayValue ?? []
        let oldContainers = old[path: ["spec", "containers"]]?.arrayValue ?? []
        guard newContainers.count == oldContainers.count,
            zip(newContainers, oldContainers).allSatisfy({ $0["name"] == $1["name"] })
        else {
            return [.forbidden("spec.containers", "containers may not be added, removed, reordered or renamed")]
        }
        for (index, (newContainer, oldContainer)) in zip(newContainers, oldContainers).enumerated() {
            let field = "spec.containers[\(index)]"
            validateResources(newContainer, field: field, errors: &errors)
            for kind in ["requests", "limits"] {
                let newMap = newContainer[path: ["resources", kind]]?.objectValue ?? [:]
                let oldMap = oldContainer[path: ["resources", kind]]?.objectValue ?? [:]
                for name in Set(newMap.keys).union(oldMap.keys).sorted() where name != "cpu" && name != "memory" {
                    if newMap[name] != oldMap[name] {
                        errors.append(
                            .forbidden(
                                "\(field).resources.\(kind)[\(name)]",
                                "only cpu and memory resources are mutable"
                            )
                        )
                    }
                }
            }
        }
        if qosClass(new) != qosClass(old) {
            errors.append(.invalid("metadata", qosClass(old), "Pod QoS is immutable"))
        }
        return errors
    }

    // MARK: events

    /// `core/v1` event creation rules (the server's `legacyValidateEvent` for `v1`).
    static func validateEventCreate(_ event: JSON) -> [FieldError] {
        var errors: [FieldError] = []
        validateMetadata(event, namespaced: true, errors: &errors)
        let namespace = event[path: ["metadata", "namespace"]]?.stringValue ?? ""
        let involvedNamespace = event[path: ["involvedObject", "namespace"]]?.stringValue ?? ""
        let eventTime = event["eventTime"]?.stringValue ?? ""
        if eventTime.isEmpty {
            if involvedNamespace.isEmpty {
                if !namespace.isEmpty, namespace != "default" {
                    errors.append(
                        .invalid("involvedObject.namespace", involvedNamespace, "does not match event.namespace")
                    )
                }
            } else if namespace != involvedNamespace {
                errors.append(.invalid("involvedObject.namespace", involvedNamespace, "does not match event.namespace"))
            }
        } else {
            if involvedNamespace.isEmpty, namespace != "default", namespace != "kube-system" {
                errors.append(.invalid("involvedObject.namespace", involvedNamespace, "does not match event.namespace"))
            }
            let controller = event["reportingComponent"]?.stringValue ?? ""
            if controller.isEmpty {
                errors.append(.required("reportingComponent"))
            } else if let problem = labelKeyProblem(controller) {
                errors.append(.invalid("reportingComponent", controller, problem))
            }
            let instance = event["reportingInstance"]?.stringValue ?? ""
            if instance.isEmpty { errors.append(.required("reportingInstance")) }
            if instance.count > 128 {
                errors.append(.invalid("reportingInstance", "", "can have at most 128 characters"))
            }
            let action = event["action"]?.stringValue ?? ""
            if action.isEmpty { errors.append(.required("action")) }
            if action.count > 128 { errors.append(.invalid("action", "", "can have at most 128 characters")) }
            let reason = event["reason"]?.stringValue ?? ""
            if reason.isEmpty { errors.append(.required("reason")) }
            if reason.count > 128 { errors.append(.invalid("reason", "", "can have at most 128 characters")) }
            if (event["message"]?.stringValue ?? "").count > 1024 {
                errors.append(.invalid("message", "", "can have at most 1024 characters"))
            }
        }
        if !namespace.isEmpty, !isDNSSubdomain(namespace) {
            errors.append(
                .invalid(
                    "namespace",
                    namespace,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
                )
            )
        }
        return errors
    }

    // MARK: known fields (fieldValidation)

    /// Known field names by path (object keys; list elements add no key). A path not listed here is
    /// open: anything below it is accepted (the double does not carry the whole schema).
    static let knownFields: [String: [[String]: Set<String>]] = {
        let objectMeta: Set<String> = [
            "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
            "creationTimestamp",
            "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
            "managedFields",
        ]
        let container: Set<String> = [
            "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources", "resizePolicy",
            "restartPolicy", "restartPolicyRules", "volumeMounts", "volumeDevices", "livenessProbe", "readinessProbe",
            "startupProbe", "lifecycle", "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
            "securityContext", "stdin", "stdinOnce", "tty",
        ]
        let podSpec: Set<String> = [
            "volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
            "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector", "serviceAccountName",
            "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID", "hostIPC",
            "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname", "subdomain", "affinity",
            "schedulerName", "tolerations", "hostAliases", "priorityClassName", "priority", "dnsConfig",
            "readinessGates",
            "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead", "topologySpreadConstraints",
            "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims", "resources",
            "hostnameOverride",
            "workloadRef",
        ]
        return [
            "Pod": [
                []: ["apiVersion", "kind", "metadata", "spec", "status"],
                ["metadata"]: objectMeta,
                ["spec"]: podSpec,
                ["spec", "containers"]: container,
                ["spec", "initContainers"]: container,
                ["spec", "containers", "resources"]: ["limits", "requests", "claims"],
            ],
            "Event": [
                []: [
                    "apiVersion", "kind", "metadata", "involvedObject", "reason", "message", "source", "firstTimestamp",
                    "lastTimestamp", "count", "type", "eventTime", "series", "action", "related", "reportingComponent",
                    "reportingInstance",
                ],
                ["metadata"]: objectMeta,
                ["involvedObject"]: ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"],
                ["source"]: ["component", "host"],
            ],
            "Node": [[]: ["apiVersion", "kind", "metadata", "spec", "status"], ["metadata"]: objectMeta],
            "Namespace": [[]: ["apiVersion", "kind", "metadata", "spec", "status"], ["metadata"]: objectMeta],
        ]
    }()

    /// Removes fields the schema does not know; returns the object and the dotted paths removed.
    static func pruneUnknownFields(_ object: JSON, kind: String) -> (JSON, [String]) {
        guard let schema = knownFields[kind] else { return (object, []) }
        var removed: [String] = []
        func prune(_ value: JSON, _ path: [String], _ display: String) -> JSON {
            switch value {
            case .object(var members):
                if let known = schema[path] {
                    for key in members.keys.sorted() where !known.contains(key) {
                        removed.append(display.isEmpty ? key : "\(display).\(key)")
                        members[key] = nil
                    }
                }
                for key in members.keys {
                    let childPath = path + [key]
                    if schema.keys.contains(where: { $0.starts(with: childPath) }) {
                        members[key] = prune(members[key]!, childPath, display.isEmpty ? key : "\(display).\(key)")
                    }
                }
                return .object(members)
            case .array(let elements):
                return .array(elements.enumerated().map { prune($1, path, "\(display)[\($0)]") })
            case .null, .bool, .integer, .double, .string:
                return value
            }
        }
        let result = prune(object, [], "")
        return (result, removed)
    }
}
