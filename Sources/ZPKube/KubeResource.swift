import Foundation

/// A resource type of the API (`pods`, `events`, …): where its objects live on the server.
public struct KubeResource: Sendable, Hashable, CustomStringConvertible {
    /// The API group (`""` for the core group).
    public var group: String
    /// The version (`v1`).
    public var version: String
    /// The plural resource name used in paths (`pods`).
    public var plural: String
    /// Whether objects live in namespaces.
    public var namespaced: Bool

    /// A resource type.
    public init(group: String, version: String, plural: String, namespaced: Bool) {
        self.group = group
        self.version = version
        self.plural = plural
        self.namespaced = namespaced
    }

    /// `core/v1 pods`.
    public static let pods = KubeResource(group: "", version: "v1", plural: "pods", namespaced: true)
    /// `core/v1 events`.
    public static let events = KubeResource(group: "", version: "v1", plural: "events", namespaced: true)
    /// `core/v1 nodes`.
    public static let nodes = KubeResource(group: "", version: "v1", plural: "nodes", namespaced: false)
    /// `core/v1 namespaces`.
    public static let namespaces = KubeResource(group: "", version: "v1", plural: "namespaces", namespaced: false)

    /// `/api/v1` or `/apis/<group>/<version>`.
    public var groupVersionPath: String {
        group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
    }

    /// The collection's path: across namespaces when `namespace` is nil.
    public func collectionPath(namespace: String?) -> String {
        if namespaced, let namespace {
            return "\(groupVersionPath)/namespaces/\(KubeResource.escape(namespace))/\(plural)"
        }
        return "\(groupVersionPath)/\(plural)"
    }

    /// One object's path, with an optional subresource (`status`, `resize`).
    public func objectPath(namespace: String?, name: String, subresource: String? = nil) -> String {
        var path = collectionPath(namespace: namespaced ? (namespace ?? "default") : nil)
        path += "/" + KubeResource.escape(name)
        if let subresource { path += "/" + subresource }
        return path
    }

    /// `group/version plural`.
    public var description: String { "\(group.isEmpty ? "core" : group)/\(version) \(plural)" }

    /// Percent-encodes a path segment (names are DNS labels in practice; this only guards the path).
    static func escape(_ segment: String) -> String {
        QueryEncoding.encode(segment)
    }
}

/// Percent-encoding of query values and path segments: everything but RFC 3986 unreserved characters.
enum QueryEncoding {
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out += "%"
                out.unicodeScalars.append(hex[Int(byte >> 4)])
                out.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }

    static func query(_ items: [(String, String)]) -> String {
        items.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
    }
}

/// Options of a list request.
public struct ListOptions: Sendable, Hashable {
    /// `labelSelector` (`app=web,tier!=db`).
    public var labelSelector: String?
    /// `fieldSelector` (`spec.nodeName=node-1`).
    public var fieldSelector: String?
    /// `limit`: page size.
    public var limit: Int?
    /// `continue`: the token of the next page.
    public var continueToken: String?
    /// `resourceVersion`: `"0"` allows a cached answer; nil asks for the newest state.
    public var resourceVersion: String?

    /// List options.
    public init(
        labelSelector: String? = nil,
        fieldSelector: String? = nil,
        limit: Int? = nil,
        continueToken: String? = nil,
        resourceVersion: String? = nil
    ) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
    }

    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if let labelSelector { items.append(("labelSelector", labelSelector)) }
        if let fieldSelector { items.append(("fieldSelector", fieldSelector)) }
        if let limit { items.append(("limit", String(limit))) }
        if let continueToken { items.append(("continue", continueToken)) }
        if let resourceVersion { items.append(("resourceVersion", resourceVersion)) }
        return items
    }
}

/// Options of a watch request.
public struct WatchOptions: Sendable, Hashable {
    /// `labelSelector`.
    public var labelSelector: String?
    /// `fieldSelector`.
    public var fieldSelector: String?
    /// `resourceVersion` to resume from (events after it); nil starts with synthetic ADDED events.
    public var resourceVersion: String?
    /// `allowWatchBookmarks` (default true): the server may send BOOKMARK events carrying only a newer
    /// resourceVersion to resume from.
    public var allowWatchBookmarks: Bool
    /// `timeoutSeconds`: the server ends the watch after this long (default 300, like client-go's
    /// lower bound). The client gives up a silent connection after this plus the configured grace.
    public var timeoutSeconds: Int

    /// Watch options.
    public init(
        labelSelector: String? = nil,
        fieldSelector: String? = nil,
        resourceVersion: String? = nil,
        allowWatchBookmarks: Bool = true,
        timeoutSeconds: Int = 300
    ) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.resourceVersion = resourceVersion
        self.allowWatchBookmarks = allowWatchBookmarks
        self.timeoutSeconds = timeoutSeconds
    }

    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if allowWatchBookmarks { items.append(("allowWatchBookmarks", "true")) }
        if let fieldSelector { items.append(("fieldSelector", fieldSelector)) }
        if let labelSelector { items.append(("labelSelector", labelSelector)) }
        if let resourceVersion { items.append(("resourceVersion", resourceVersion)) }
        items.append(("timeoutSeconds", String(timeoutSeconds)))
        items.append(("watch", "true"))
        return items
    }
}

/// A patch and its content type.
public enum Patch: Sendable, Hashable {
    /// `application/strategic-merge-patch+json`: maps merge, lists with a patch merge key (containers
    /// by `name`) merge by that key, `null` deletes. Built-in types only (not custom resources).
    case strategicMerge(JSON)
    /// `application/merge-patch+json` (RFC 7386): maps merge, lists are replaced, `null` deletes.
    case merge(JSON)
    /// `application/json-patch+json` (RFC 6902): a list of operations, applied in order, atomically.
    case json([JSONPatchOperation])
    /// `application/apply-patch+yaml`: server-side apply of the given (JSON, which is YAML) object;
    /// needs a field manager (``PatchOptions/fieldManager``).
    case apply(JSON)

    /// The `Content-Type` of the patch.
    public var contentType: String {
        switch self {
        case .strategicMerge: return "application/strategic-merge-patch+json"
        case .merge: return "application/merge-patch+json"
        case .json: return "application/json-patch+json"
        case .apply: return "application/apply-patch+yaml"
        }
    }

    /// The request body.
    public var body: JSON {
        switch self {
        case .strategicMerge(let document), .merge(let document), .apply(let document): return document
        case .json(let operations): return .array(operations.map(\.json))
        }
    }
}

/// One operation of a JSON patch (RFC 6902).
public struct JSONPatchOperation: Sendable, Hashable {
    /// The operation.
    public enum Op: String, Sendable, Hashable {
        /// Adds a member or inserts an array element (`-` appends).
        case add
        /// Removes the target.
        case remove
        /// Replaces the target (which must exist).
        case replace
        /// Moves `from` to `path`.
        case move
        /// Copies `from` to `path`.
        case copy
        /// Fails the whole patch unless the target equals `value` (a precondition).
        case test
    }

    /// `op`.
    public var op: Op
    /// `path`: a JSON pointer (RFC 6901; `~1` is `/`, `~0` is `~`).
    public var path: String
    /// `value` (add, replace, test).
    public var value: JSON?
    /// `from` (move, copy).
    public var from: String?

    /// An operation.
    public init(op: Op, path: String, value: JSON? = nil, from: String? = nil) {
        self.op = op
        self.path = path
        self.value = value
        self.from = from
    }

    /// Escapes one reference token of a JSON pointer (`status.zeropod.ctrox.dev/app` →
    /// `status.zeropod.ctrox.dev~1app`).
    public static func escape(_ token: String) -> String {
        token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    var json: JSON {
        var object: [String: JSON] = ["op": .string(op.rawValue), "path": .string(path)]
        if let value { object["value"] = value }
        if let from { object["from"] = .string(from) }
        return .object(object)
    }
}

/// Options of a patch, create or update request.
public struct WriteOptions: Sendable, Hashable {
    /// `fieldManager` (required by server-side apply).
    public var fieldManager: String?
    /// `force` (server-side apply: take over conflicting fields).
    public var force: Bool?
    /// `dryRun=All`: validate and answer without persisting.
    public var dryRun: Bool
    /// `fieldValidation`: `Strict`, `Warn` or `Ignore`.
    public var fieldValidation: String?

    /// Write options.
    public init(fieldManager: String? = nil, force: Bool? = nil, dryRun: Bool = false, fieldValidation: String? = nil) {
        self.fieldManager = fieldManager
        self.force = force
        self.dryRun = dryRun
        self.fieldValidation = fieldValidation
    }

    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if dryRun { items.append(("dryRun", "All")) }
        if let fieldManager { items.append(("fieldManager", fieldManager)) }
        if let fieldValidation { items.append(("fieldValidation", fieldValidation)) }
        if let force { items.append(("force", force ? "true" : "false")) }
        return items
    }
}
