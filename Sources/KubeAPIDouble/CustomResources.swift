import ZPKube

// Custom resources (issue 16, decision 0051): a CustomResourceDefinition installed into the double
// makes its resource served under /apis/<group>/<version>, with what the real server does for
// CRDs: the structural schema of the CRD (types, required fields, enums, list-map keys) validates
// every write and prunes unknown fields (a warning, or a 400 with fieldValidation=Strict), the
// status subresource splits spec and status writes, strategic merge patches are refused (415),
// and finalizers keep a deleted object (deletionTimestamp set) until they are removed.

extension ResourceType {
    /// A custom resource from a CRD (`apiextensions.k8s.io/v1`): the first served version.
    /// - Throws: ``StatusError`` 400 naming what the definition lacks.
    static func custom(definition crd: JSON) throws(StatusError) -> ResourceType {
        guard let group = crd[path: ["spec", "group"]]?.stringValue,
            let plural = crd[path: ["spec", "names", "plural"]]?.stringValue,
            let kind = crd[path: ["spec", "names", "kind"]]?.stringValue,
            case .array(let versions)? = crd[path: ["spec", "versions"]],
            let served = versions.first(where: { $0["served"]?.boolValue == true }),
            let version = served["name"]?.stringValue
        else {
            throw StatusError.badRequest(
                "CustomResourceDefinition needs spec.group, spec.names.plural/kind and a served version"
            )
        }
        let shortNames: [String]
        if case .array(let names)? = crd[path: ["spec", "names", "shortNames"]] {
            shortNames = names.compactMap(\.stringValue)
        } else {
            shortNames = []
        }
        var type = ResourceType(
            plural: plural,
            kind: kind,
            namespaced: crd[path: ["spec", "scope"]]?.stringValue != "Cluster",
            shortNames: shortNames,
            singular: crd[path: ["spec", "names", "singular"]]?.stringValue ?? kind.lowercased()
        )
        type.group = group
        type.version = version
        type.statusSubresource = served[path: ["subresources", "status"]] != nil
        type.schema = served[path: ["schema", "openAPIV3Schema"]]
        return type
    }
}

/// A CRD's structural schema applied to an object: validation errors and pruned fields.
enum StructuralSchema {
    /// Checks `object` against `schema` (from its root): returns the object without unknown fields,
    /// the paths of the fields dropped, and the validation errors.
    static func apply(_ object: JSON, schema: JSON) -> (JSON, pruned: [String], errors: [FieldError]) {
        var pruned: [String] = []
        var errors: [FieldError] = []
        var result = object
        // metadata, apiVersion and kind are the server's own; only the rest follows the schema.
        if case .object(var members) = object, case .object(let properties)? = schema["properties"] {
            for (key, value) in members where !["metadata", "apiVersion", "kind"].contains(key) {
                guard let child = properties[key] else {
                    pruned.append(key)
                    members[key] = nil
                    continue
                }
                members[key] = check(value, child, key, &pruned, &errors)
            }
            if case .array(let required)? = schema["required"] {
                for name in required.compactMap(\.stringValue)
                where members[name] == nil && !["metadata", "apiVersion", "kind"].contains(name) {
                    errors.append(.required(name))
                }
            }
            result = .object(members)
        }
        return (result, pruned, errors)
    }

    private static func typeName(_ value: JSON) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "boolean"
        case .integer: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    private static func check(
        _ value: JSON,
        _ schema: JSON,
        _ path: String,
        _ pruned: inout [String],
        _ errors: inout [FieldError]
    )
        -> JSON
    {
        let type = schema["type"]?.stringValue
        let actual = typeName(value)
        if let type, type != actual, !(type == "number" && actual == "integer") {
            errors.append(.invalid(path, "\"\(actual)\"", "\(path) in body must be of type \(type): \"\(actual)\""))
            return value
        }
        if case .array(let allowed)? = schema["enum"], !allowed.contains(value) {
            let list = allowed.map { $0.stringValue.map { "\"\($0)\"" } ?? $0.text }.joined(separator: ", ")
            errors.append(FieldError(kind: .notSupported, field: path, value: value.text, detail: list))
        }
        switch value {
        case .object(var members):
            if schema["x-kubernetes-preserve-unknown-fields"]?.boolValue == true { return value }
            let properties: [String: JSON]
            if case .object(let p)? = schema["properties"] { properties = p } else { properties = [:] }
            for key in members.keys.sorted() {
                guard let child = properties[key] else {
                    pruned.append("\(path).\(key)")
                    members[key] = nil
                    continue
                }
                members[key] = check(members[key]!, child, "\(path).\(key)", &pruned, &errors)
            }
            if case .array(let required)? = schema["required"] {
                for name in required.compactMap(\.stringValue) where members[name] == nil {
                    errors.append(.required("\(path).\(name)"))
                }
            }
            return .object(members)
        case .array(var elements):
            if let items = schema["items"] {
                for i in elements.indices { elements[i] = check(elements[i], items, "\(path)[\(i)]", &pruned, &errors) }
            }
            if schema["x-kubernetes-list-type"]?.stringValue == "map",
                case .array(let keys)? = schema["x-kubernetes-list-map-keys"]
            {
                let names = keys.compactMap(\.stringValue)
                var seen: Set<[JSON]> = []
                for (i, element) in elements.enumerated() {
                    let key = names.map { element[$0] ?? .null }
                    if !seen.insert(key).inserted {
                        let shown = zip(names, key).map { "\"\($0)\":\($1.text)" }.joined(separator: ", ")
                        errors.append(
                            FieldError(
                                kind: .duplicate,
                                field: "\(path)[\(i)]",
                                value: nil,
                                detail: "map[string]interface {}{\(shown)}"
                            )
                        )
                    }
                }
            }
            return .array(elements)
        case .null, .bool, .integer, .double, .string:
            return value
        }
    }
}
