import ZPKube

// MARK: - quantities

/// A resource quantity (`250m`, `1Ki`, `1.5Gi`, `1e3`) as the server parses it, reduced to a Double
/// (enough to compare requests, limits and QoS classes in a test double).
enum Quantity {
    /// The value, or nil when `text` is not a quantity.
    static func value(_ text: String) -> Double? {
        var body = Substring(text)
        var sign = 1.0
        if body.first == "+" {
            body = body.dropFirst()
        } else if body.first == "-" {
            sign = -1
            body = body.dropFirst()
        }
        let number = body.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        guard !number.isEmpty, number != ".", number.filter({ $0 == "." }).count <= 1, let base = Double(number) else {
            return nil
        }
        let suffix = body.dropFirst(number.count)
        let multiplier: Double
        switch suffix {
        case "": multiplier = 1
        case "m": multiplier = 1e-3
        case "k": multiplier = 1e3
        case "M": multiplier = 1e6
        case "G": multiplier = 1e9
        case "T": multiplier = 1e12
        case "P": multiplier = 1e15
        case "E": multiplier = 1e18
        case "Ki": multiplier = 1024
        case "Mi": multiplier = 1_048_576
        case "Gi": multiplier = 1_073_741_824
        case "Ti": multiplier = 1_099_511_627_776
        case "Pi": multiplier = 1_125_899_906_842_624
        case "Ei": multiplier = 1_152_921_504_606_846_976
        default:
            guard let first = suffix.first, first == "e" || first == "E" else { return nil }
            var exponent = suffix.dropFirst()
            if exponent.first == "+" || exponent.first == "-" { exponent = exponent.dropFirst() }
            guard !exponent.isEmpty, exponent.allSatisfy({ $0.isASCII && $0.isNumber }),
                let power = Int(suffix.dropFirst())
            else { return nil }
            var result = 1.0
            for _ in 0..<abs(power) { result *= 10 }
            multiplier = power < 0 ? 1 / result : result
        }
        return sign * base * multiplier
    }
}

// MARK: - label selectors

/// One requirement of a label selector.
enum LabelRequirement: Equatable, Sendable {
    case equals(String, String)
    case notEquals(String, String)
    case inSet(String, Set<String>)
    case notInSet(String, Set<String>)
    case exists(String)
    case notExists(String)

    func matches(_ labels: [String: String]) -> Bool {
        switch self {
        case .equals(let key, let value): return labels[key] == value
        case .notEquals(let key, let value): return labels[key] != value
        case .inSet(let key, let values): return labels[key].map(values.contains) ?? false
        case .notInSet(let key, let values): return !(labels[key].map(values.contains) ?? false)
        case .exists(let key): return labels[key] != nil
        case .notExists(let key): return labels[key] == nil
        }
    }
}

/// Parses a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
/// - Throws: a message for the 400 answer.
func parseLabelSelector(_ text: String) throws(SelectorError) -> [LabelRequirement] {
    var requirements: [LabelRequirement] = []
    // Split on commas outside parentheses.
    var parts: [String] = []
    var depth = 0
    var current = ""
    for character in text {
        if character == "(" { depth += 1 }
        if character == ")" { depth -= 1 }
        if character == ",", depth == 0 {
            parts.append(current)
            current = ""
        } else {
            current.append(character)
        }
    }
    parts.append(current)
    for rawPart in parts {
        let part = rawPart.trimmingSpaces()
        if part.isEmpty {
            if text.trimmingSpaces().isEmpty { continue }
            throw SelectorError(message: "unable to parse requirement: found '', expected: identifier")
        }
        if let (key, values, negated) = try setRequirement(part) {
            try validateLabelKey(key)
            requirements.append(negated ? .notInSet(key, values) : .inSet(key, values))
            continue
        }
        if let range = part.firstRange(of: "!=") {
            let key = String(part[..<range.lowerBound]).trimmingSpaces()
            try validateLabelKey(key)
            requirements.append(.notEquals(key, String(part[range.upperBound...]).trimmingSpaces()))
        } else if let range = part.firstRange(of: "==") ?? part.firstRange(of: "=") {
            let key = String(part[..<range.lowerBound]).trimmingSpaces()
            try validateLabelKey(key)
            requirements.append(.equals(key, String(part[range.upperBound...]).trimmingSpaces()))
        } else if part.hasPrefix("!") {
            let key = String(part.dropFirst()).trimmingSpaces()
            try validateLabelKey(key)
            requirements.append(.notExists(key))
        } else {
            try validateLabelKey(part)
            requirements.append(.exists(part))
        }
    }
    return requirements
}

/// `key in (a,b)` / `key notin (a,b)`: the key, the values and whether it is `notin`.
private func setRequirement(_ part: String) throws(SelectorError) -> (String, Set<String>, Bool)? {
    for (operatorText, negated) in [(" notin ", true), (" in ", false)] {
        guard let range = part.firstRange(of: operatorText) else { continue }
        let key = String(part[..<range.lowerBound]).trimmingSpaces()
        var values = String(part[range.upperBound...]).trimmingSpaces()
        guard values.hasPrefix("("), values.hasSuffix(")") else {
            throw SelectorError(message: "unable to parse requirement: expected a '(' in '\(part)'")
        }
        values = String(values.dropFirst().dropLast())
        return (key, Set(values.split(separator: ",").map { String($0).trimmingSpaces() }), negated)
    }
    return nil
}

private func validateLabelKey(_ key: String) throws(SelectorError) {
    if let message = Validation.labelKeyProblem(key) {
        throw SelectorError(message: "unable to parse requirement: invalid label key \"\(key)\": \(message)")
    }
}

/// A selector that cannot be parsed or names an unsupported field (HTTP 400).
struct SelectorError: Error {
    var message: String
}

// MARK: - field selectors

/// One requirement of a field selector.
struct FieldRequirement: Equatable, Sendable {
    var field: String
    var value: String
    var negated: Bool
}

/// Parses a field selector and checks that the resource supports each field (as the server does:
/// `field label not supported: <field>`).
func parseFieldSelector(_ text: String, resource: String) throws(SelectorError) -> [FieldRequirement] {
    var requirements: [FieldRequirement] = []
    for rawPart in text.split(separator: ",") {
        let part = String(rawPart).trimmingSpaces()
        let requirement: FieldRequirement
        if let range = part.firstRange(of: "!=") {
            requirement = FieldRequirement(
                field: String(part[..<range.lowerBound]),
                value: String(part[range.upperBound...]),
                negated: true
            )
        } else if let range = part.firstRange(of: "==") ?? part.firstRange(of: "=") {
            requirement = FieldRequirement(
                field: String(part[..<range.lowerBound]),
                value: String(part[range.upperBound...]),
                negated: false
            )
        } else {
            throw SelectorError(message: "invalid selector: '\(part)'; can't understand '\(part)'")
        }
        guard selectableFields(resource).contains(requirement.field) else {
            throw SelectorError(message: "field label not supported: \(requirement.field)")
        }
        requirements.append(requirement)
    }
    return requirements
}

/// The fields a resource can be selected by (the server's `ToSelectableFields`).
func selectableFields(_ resource: String) -> Set<String> {
    let meta: Set<String> = ["metadata.name", "metadata.namespace"]
    switch resource {
    case "pods":
        return meta.union([
            "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
            "status.phase", "status.podIP", "status.nominatedNodeName",
        ])
    case "events":
        return meta.union([
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
            "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
            "reportingComponent", "source", "type",
        ])
    case "nodes":
        return meta.union(["spec.unschedulable"])
    default:
        return meta.union(["status.phase"])
    }
}

/// The value of a selectable field of an object.
func fieldValue(_ object: JSON, _ field: String) -> String {
    switch field {
    case "spec.hostNetwork":
        return object[path: ["spec", "hostNetwork"]]?.boolValue == true ? "true" : "false"
    case "spec.unschedulable":
        return object[path: ["spec", "unschedulable"]]?.boolValue == true ? "true" : "false"
    case "source":
        return object[path: ["source", "component"]]?.stringValue ?? ""
    case "status.podIP":
        return object[path: ["status", "podIPs"]]?.arrayValue?.first?["ip"]?.stringValue
            ?? object[path: ["status", "podIP"]]?.stringValue ?? ""
    default:
        let value = object[path: field.split(separator: ".").map(String.init)]
        switch value {
        case .string(let text)?: return text
        case .integer(let number)?: return String(number)
        case .bool(let flag)?: return flag ? "true" : "false"
        case .null?, .double?, .array?, .object?, nil: return ""
        }
    }
}

/// A parsed list/watch filter.
struct ObjectFilter: Sendable {
    var namespace: String?
    var labels: [LabelRequirement] = []
    var fields: [FieldRequirement] = []

    func matches(_ object: JSON) -> Bool {
        if let namespace, object[path: ["metadata", "namespace"]]?.stringValue != namespace { return false }
        let labelMap = object[path: ["metadata", "labels"]]?.objectValue?.compactMapValues(\.stringValue) ?? [:]
        for requirement in labels where !requirement.matches(labelMap) { return false }
        for requirement in fields {
            let equal = fieldValue(object, requirement.field) == requirement.value
            if equal == requirement.negated { return false }
        }
        return true
    }
}

extension String {
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text = text.dropFirst() }
        while text.last?.isWhitespace == true { text = text.dropLast() }
        return String(text)
    }
}
