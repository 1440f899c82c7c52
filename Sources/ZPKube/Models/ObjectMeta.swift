import Foundation

/// `metadata` of a Kubernetes object (`meta/v1 ObjectMeta`), the fields this client reads and writes.
public struct ObjectMeta: Codable, Sendable, Hashable {
    /// `metadata.name`.
    public var name: String?
    /// `metadata.generateName`: the server appends a random suffix when `name` is empty.
    public var generateName: String?
    /// `metadata.namespace`.
    public var namespace: String?
    /// `metadata.uid`, set by the server.
    public var uid: String?
    /// `metadata.resourceVersion`, the optimistic-concurrency token (opaque: compare for equality only).
    public var resourceVersion: String?
    /// `metadata.creationTimestamp` (RFC 3339, seconds).
    public var creationTimestamp: String?
    /// `metadata.deletionTimestamp`, set once deletion started.
    public var deletionTimestamp: String?
    /// `metadata.labels`.
    public var labels: [String: String]?
    /// `metadata.annotations`.
    public var annotations: [String: String]?
    /// `metadata.finalizers`: the object stays (with a deletionTimestamp) until they are removed.
    public var finalizers: [String]?
    /// `metadata.ownerReferences`: garbage collection deletes the object after all its owners.
    public var ownerReferences: [OwnerReference]?

    /// Metadata with the given fields.
    public init(
        name: String? = nil,
        generateName: String? = nil,
        namespace: String? = nil,
        uid: String? = nil,
        resourceVersion: String? = nil,
        creationTimestamp: String? = nil,
        deletionTimestamp: String? = nil,
        labels: [String: String]? = nil,
        annotations: [String: String]? = nil
    ) {
        self.name = name
        self.generateName = generateName
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.creationTimestamp = creationTimestamp
        self.deletionTimestamp = deletionTimestamp
        self.labels = labels
        self.annotations = annotations
    }
}

/// One entry of `metadata.ownerReferences`.
public struct OwnerReference: Codable, Sendable, Hashable {
    /// The owner's `apiVersion` (`v1`).
    public var apiVersion: String
    /// The owner's kind (`Pod`).
    public var kind: String
    /// The owner's name.
    public var name: String
    /// The owner's uid.
    public var uid: String

    /// A reference.
    public init(apiVersion: String, kind: String, name: String, uid: String) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.uid = uid
    }
}

/// `metadata` of a list (`meta/v1 ListMeta`).
public struct ListMeta: Codable, Sendable, Hashable {
    /// The resourceVersion the list was read at; a watch resumes from it.
    public var resourceVersion: String?
    /// The token for the next page, when the list was paged (`limit`).
    public var `continue`: String?
    /// How many items follow this page, when the server knows.
    public var remainingItemCount: Int64?

    /// List metadata with the given fields.
    public init(resourceVersion: String? = nil, continue: String? = nil, remainingItemCount: Int64? = nil) {
        self.resourceVersion = resourceVersion
        self.continue = `continue`
        self.remainingItemCount = remainingItemCount
    }
}

/// A Kubernetes list (`PodList`, `EventList`, …): one page of items.
public struct KubeList<Item: Codable & Sendable>: Codable, Sendable {
    /// `apiVersion` (`v1`).
    public var apiVersion: String?
    /// `kind` (`PodList`).
    public var kind: String?
    /// The list's resourceVersion and paging token.
    public var metadata: ListMeta
    /// The items of this page (`null` on the wire decodes as empty).
    public var items: [Item]

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, items }

    /// Decodes a list; a missing or null `items` is an empty page.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try container.decodeIfPresent(String.self, forKey: .apiVersion)
        kind = try container.decodeIfPresent(String.self, forKey: .kind)
        metadata = try container.decodeIfPresent(ListMeta.self, forKey: .metadata) ?? ListMeta()
        items = try container.decodeIfPresent([Item].self, forKey: .items) ?? []
    }

    /// A list with the given items.
    public init(apiVersion: String? = nil, kind: String? = nil, metadata: ListMeta = ListMeta(), items: [Item]) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.items = items
    }
}

/// Formats and parses the two timestamp encodings of the Kubernetes API.
public enum KubeTime {
    /// `meta/v1 Time`: RFC 3339 in UTC with seconds (`2026-12-06T10:00:00Z`).
    public static func time(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }

    /// `meta/v1 MicroTime`: RFC 3339 in UTC with microseconds (`2026-12-06T10:00:00.123456Z`).
    public static func microTime(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        let micros = Int(((date.timeIntervalSince1970 - seconds) * 1_000_000).rounded(.down))
        let base = time(Date(timeIntervalSince1970: seconds))
        let fraction = String(micros)
        return base.dropLast() + "." + String(repeating: "0", count: 6 - fraction.count) + fraction + "Z"
    }

    /// Parses a `Time` or `MicroTime` string; nil when it is neither.
    public static func parse(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
