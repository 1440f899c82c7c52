import ZPKube

/// A patch that cannot be applied: malformed (HTTP 400) or not applicable to the object (422).
struct PatchError: Error {
    enum Kind { case malformed, notApplicable }
    var kind: Kind
    var message: String
}

// MARK: - JSON merge patch (RFC 7386)

/// Applies a JSON merge patch: objects merge member by member, `null` removes a member, anything
/// else (arrays included) replaces the target.
func applyMergePatch(_ patch: JSON, to target: JSON) -> JSON {
    guard case .object(let patchMembers) = patch else { return patch }
    var result: [String: JSON]
    if case .object(let members) = target { result = members } else { result = [:] }
    for (key, value) in patchMembers {
        if case .null = value {
            result[key] = nil
        } else {
            result[key] = applyMergePatch(value, to: result[key] ?? .null)
        }
    }
    return .object(result)
}

// MARK: - JSON patch (RFC 6902)

/// Applies a JSON patch (add, remove, replace, move, copy, test), all or nothing.
func applyJSONPatch(_ patch: JSON, to target: JSON) throws(PatchError) -> JSON {
    guard case .array(let operations) = patch else {
        throw PatchError(kind: .malformed, message: "json patch must be an array of operations")
    }
    var document = target
    for (index, operation) in operations.enumerated() {
        guard case .object(let fields) = operation, let op = fields["op"]?.stringValue else {
            throw PatchError(kind: .malformed, message: "operation \(index) has no 'op'")
        }
        guard let path = fields["path"]?.stringValue else {
            throw PatchError(kind: .malformed, message: "operation \(index) (\(op)) has no 'path'")
        }
        let pointer = try parsePointer(path)
        switch op {
        case "add":
            guard let value = fields["value"] else { throw missing("value", op, index) }
            document = try pointerAdd(document, pointer[...], value, path: path)
        case "remove":
            document = try pointerRemove(document, pointer[...], path: path).0
        case "replace":
            guard let value = fields["value"] else { throw missing("value", op, index) }
            _ = try pointerGet(document, pointer[...], path: path)
            document = try pointerRemove(document, pointer[...], path: path).0
            document = try pointerAdd(document, pointer[...], value, path: path)
        case "move":
            guard let from = fields["from"]?.stringValue else { throw missing("from", op, index) }
            let fromPointer = try parsePointer(from)
            let (without, value) = try pointerRemove(document, fromPointer[...], path: from)
            document = try pointerAdd(without, pointer[...], value, path: path)
        case "copy":
            guard let from = fields["from"]?.stringValue else { throw missing("from", op, index) }
            let value = try pointerGet(document, try parsePointer(from)[...], path: from)
            document = try pointerAdd(document, pointer[...], value, path: path)
        case "test":
            guard let value = fields["value"] else { throw missing("value", op, index) }
            let actual = try pointerGet(document, pointer[...], path: path)
            if actual != value {
                throw PatchError(
                    kind: .notApplicable,
                    message: "testing value \(path) failed: expected \(value.text), found \(actual.text)"
                )
            }
        default:
            throw PatchError(kind: .malformed, message: "unexpected operation '\(op)' (operation \(index))")
        }
    }
    return document
}

private func missing(_ field: String, _ op: String, _ index: Int) -> PatchError {
    PatchError(kind: .malformed, message: "operation \(index) (\(op)) has no '\(field)'")
}

private func parsePointer(_ path: String) throws(PatchError) -> [String] {
    if path.isEmpty { return [] }
    guard path.hasPrefix("/") else {
        throw PatchError(kind: .malformed, message: "JSON pointer '\(path)' does not start with '/'")
    }
    return path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
        String($0).replacing("~1", with: "/").replacing("~0", with: "~")
    }
}

private func arrayIndex(_ token: String, count: Int, allowEnd: Bool, path: String) throws(PatchError) -> Int {
    if allowEnd, token == "-" { return count }
    guard let index = Int(token), index >= 0, String(index) == token, index < count + (allowEnd ? 1 : 0) else {
        throw PatchError(kind: .notApplicable, message: "index '\(token)' of \(path) is out of range")
    }
    return index
}

private func pointerGet(_ document: JSON, _ pointer: ArraySlice<String>, path: String) throws(PatchError) -> JSON {
    guard let token = pointer.first else { return document }
    switch document {
    case .object(let members):
        guard let child = members[token] else {
            throw PatchError(kind: .notApplicable, message: "\(path): no member '\(token)'")
        }
        return try pointerGet(child, pointer.dropFirst(), path: path)
    case .array(let elements):
        let index = try arrayIndex(token, count: elements.count, allowEnd: false, path: path)
        return try pointerGet(elements[index], pointer.dropFirst(), path: path)
    case .null, .bool, .integer, .double, .string:
        throw PatchError(kind: .notApplicable, message: "\(path): '\(token)' is inside a \(document.typeName)")
    }
}

private func pointerAdd(
    _ document: JSON,
    _ pointer: ArraySlice<String>,
    _ value: JSON,
    path: String
) throws(PatchError)
    -> JSON
{
    guard let token = pointer.first else { return value }
    let rest = pointer.dropFirst()
    switch document {
    case .object(var members):
        if rest.isEmpty {
            members[token] = value
        } else {
            guard let child = members[token] else {
                throw PatchError(kind: .notApplicable, message: "\(path): no member '\(token)'")
            }
            members[token] = try pointerAdd(child, rest, value, path: path)
        }
        return .object(members)
    case .array(var elements):
        if rest.isEmpty {
            elements.insert(value, at: try arrayIndex(token, count: elements.count, allowEnd: true, path: path))
        } else {
            let index = try arrayIndex(token, count: elements.count, allowEnd: false, path: path)
            elements[index] = try pointerAdd(elements[index], rest, value, path: path)
        }
        return .array(elements)
    case .null, .bool, .integer, .double, .string:
        throw PatchError(kind: .notApplicable, message: "\(path): '\(token)' is inside a \(document.typeName)")
    }
}

private func pointerRemove(
    _ document: JSON,
    _ pointer: ArraySlice<String>,
    path: String
) throws(PatchError) -> (JSON, JSON) {
    guard let token = pointer.first else {
        throw PatchError(kind: .notApplicable, message: "cannot remove the whole document")
    }
    let rest = pointer.dropFirst()
    switch document {
    case .object(var members):
        guard let child = members[token] else {
            throw PatchError(kind: .notApplicable, message: "\(path): no member '\(token)' to remove")
        }
        if rest.isEmpty {
            members[token] = nil
            return (.object(members), child)
        }
        let (newChild, removed) = try pointerRemove(child, rest, path: path)
        members[token] = newChild
        return (.object(members), removed)
    case .array(var elements):
        let index = try arrayIndex(token, count: elements.count, allowEnd: false, path: path)
        if rest.isEmpty {
            let removed = elements.remove(at: index)
            return (.array(elements), removed)
        }
        let (newChild, removed) = try pointerRemove(elements[index], rest, path: path)
        elements[index] = newChild
        return (.array(elements), removed)
    case .null, .bool, .integer, .double, .string:
        throw PatchError(kind: .notApplicable, message: "\(path): '\(token)' is inside a \(document.typeName)")
    }
}

// MARK: - strategic merge patch

/// How a list field merges in a strategic merge patch, from the Kubernetes Go types'
/// `patchStrategy`/`patchMergeKey` tags (`x-kubernetes-patch-*` in OpenAPI).
enum ListStrategy: Equatable {
    /// Merge elements by this key.
    case mergeByKey(String)
    /// Merge a list of scalars as a set (`finalizers`).
    case mergeScalars
    /// Replace the whole list (no strategy).
    case replace
}

/// The patch strategies of the fields this double serves, by path of object keys (list elements
/// contribute no key). Lists not named here are replaced, as the server does for lists without a
/// `patchStrategy`.
let strategicListStrategies: [[String]: ListStrategy] = {
    var table: [[String]: ListStrategy] = [
        ["metadata", "finalizers"]: .mergeScalars,
        ["metadata", "ownerReferences"]: .mergeByKey("uid"),
        ["spec", "containers"]: .mergeByKey("name"),
        ["spec", "initContainers"]: .mergeByKey("name"),
        ["spec", "ephemeralContainers"]: .mergeByKey("name"),
        ["spec", "volumes"]: .mergeByKey("name"),
        ["spec", "imagePullSecrets"]: .mergeByKey("name"),
        ["spec", "hostAliases"]: .mergeByKey("ip"),
        ["status", "conditions"]: .mergeByKey("type"),
        ["status", "podIPs"]: .mergeByKey("ip"),
        ["status", "hostIPs"]: .mergeByKey("ip"),
    ]
    for containers in ["containers", "initContainers", "ephemeralContainers"] {
        table[["spec", containers, "env"]] = .mergeByKey("name")
        table[["spec", containers, "ports"]] = .mergeByKey("containerPort")
        table[["spec", containers, "volumeMounts"]] = .mergeByKey("mountPath")
        table[["spec", containers, "volumeDevices"]] = .mergeByKey("devicePath")
        table[["spec", containers, "resizePolicy"]] = .mergeByKey("resourceName")
    }
    return table
}()

/// Applies a strategic merge patch: maps merge (null deletes), lists merge by their patch merge key
/// (containers by `name`), other lists are replaced. Directives: `$patch: replace|delete|merge` in
/// maps and list elements, `$retainKeys`, `$deleteFromPrimitiveList/<field>`, and
/// `$setElementOrder/<field>` (which orders the merged list like kubectl sends it).
func applyStrategicMergePatch(_ patch: JSON, to target: JSON) throws(PatchError) -> JSON {
    guard case .object = patch else {
        throw PatchError(kind: .malformed, message: "a strategic merge patch must be a JSON object")
    }
    return try strategicMerge(patch, into: target, path: [])
}

private func strategicMerge(_ patch: JSON, into target: JSON, path: [String]) throws(PatchError) -> JSON {
    guard case .object(var patchMembers) = patch else { return patch }
    if let directive = patchMembers["$patch"]?.stringValue {
        patchMembers["$patch"] = nil
        switch directive {
        case "replace": return .object(patchMembers)
        case "delete": return .null
        case "merge": break
        default:
            throw PatchError(kind: .malformed, message: "unknown patch directive '\(directive)' at \(dotted(path))")
        }
    }
    var result: [String: JSON]
    if case .object(let members) = target { result = members } else { result = [:] }
    if let retain = patchMembers.removeValue(forKey: "$retainKeys") {
        guard case .array(let keys) = retain else {
            throw PatchError(kind: .malformed, message: "$retainKeys at \(dotted(path)) must be a list")
        }
        let keep = Set(keys.compactMap(\.stringValue))
        result = result.filter { keep.contains($0.key) }
    }
    var orders: [String: [JSON]] = [:]
    for (key, value) in patchMembers where key.hasPrefix("$setElementOrder/") {
        guard case .array(let order) = value else {
            throw PatchError(kind: .malformed, message: "\(key) at \(dotted(path)) must be a list")
        }
        orders[String(key.dropFirst("$setElementOrder/".count))] = order
        patchMembers[key] = nil
    }
    for (key, value) in patchMembers where key.hasPrefix("$deleteFromPrimitiveList/") {
        let field = String(key.dropFirst("$deleteFromPrimitiveList/".count))
        guard case .array(let remove) = value else {
            throw PatchError(kind: .malformed, message: "\(key) at \(dotted(path)) must be a list")
        }
        if case .array(let existing) = result[field] {
            result[field] = .array(existing.filter { !remove.contains($0) })
        }
        patchMembers[key] = nil
    }
    for (key, value) in patchMembers {
        if key.hasPrefix("$") {
            throw PatchError(kind: .malformed, message: "unknown patch directive '\(key)' at \(dotted(path))")
        }
        let childPath = path + [key]
        switch value {
        case .null:
            result[key] = nil
        case .object:
            let merged = try strategicMerge(value, into: result[key] ?? .null, path: childPath)
            result[key] = merged == .null ? nil : merged
        case .array(let elements):
            result[key] = try mergeList(elements, into: result[key], path: childPath)
        case .bool, .integer, .double, .string:
            result[key] = value
        }
    }
    for (field, order) in orders {
        guard case .array(let elements) = result[field] else { continue }
        result[field] = .array(
            reorder(elements, by: order, strategy: strategicListStrategies[path + [field]] ?? .replace)
        )
    }
    return .object(result)
}

private func mergeList(_ patchElements: [JSON], into target: JSON?, path: [String]) throws(PatchError) -> JSON {
    let strategy = strategicListStrategies[path] ?? .replace
    var existing: [JSON]
    if case .array(let elements)? = target { existing = elements } else { existing = [] }
    // A list-level directive: [{"$patch": "replace"}, ...] replaces the list with the other elements.
    if patchElements.contains(where: { $0["$patch"]?.stringValue == "replace" && $0.objectValue?.count == 1 }) {
        return .array(patchElements.filter { !($0["$patch"]?.stringValue == "replace" && $0.objectValue?.count == 1) })
    }
    switch strategy {
    case .replace:
        return .array(patchElements)
    case .mergeScalars:
        for element in patchElements where !existing.contains(element) { existing.append(element) }
        return .array(existing)
    case .mergeByKey(let key):
        for element in patchElements {
            guard case .object(var members) = element else {
                throw PatchError(
                    kind: .notApplicable,
                    message: "\(dotted(path)): elements must be objects with the merge key '\(key)'"
                )
            }
            guard let keyValue = members[key] else {
                throw PatchError(
                    kind: .notApplicable,
                    message: "\(dotted(path)): an element has no merge key '\(key)'"
                )
            }
            let index = existing.firstIndex { $0[key] == keyValue }
            if members["$patch"]?.stringValue == "delete" {
                if let index { existing.remove(at: index) }
                continue
            }
            if let index {
                existing[index] = try strategicMerge(element, into: existing[index], path: path)
            } else {
                members["$patch"] = nil
                existing.append(try strategicMerge(.object(members), into: .null, path: path))
            }
        }
        return .array(existing)
    }
}

private func reorder(_ elements: [JSON], by order: [JSON], strategy: ListStrategy) -> [JSON] {
    var remaining = elements
    var ordered: [JSON] = []
    for wanted in order {
        let index: Int?
        switch strategy {
        case .mergeByKey(let key):
            guard let keyValue = wanted[key] else { continue }
            index = remaining.firstIndex { $0[key] == keyValue }
        case .mergeScalars, .replace:
            index = remaining.firstIndex(of: wanted)
        }
        if let index { ordered.append(remaining.remove(at: index)) }
    }
    return ordered + remaining
}

func dotted(_ path: [String]) -> String { path.isEmpty ? "(root)" : path.joined(separator: ".") }
