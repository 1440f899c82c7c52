import Foundation
import Synchronization
import ZPKube

/// The resource types the double serves.
struct ResourceType: Sendable, Hashable {
    var plural: String
    var kind: String
    var namespaced: Bool
    var shortNames: [String]
    var singular: String
    /// The API group (`""`: core).
    var group = ""
    /// The version.
    var version = "v1"
    /// Whether `status` is a subresource (then the main resource ignores status, and `/status` ignores everything else).
    var statusSubresource = false
    /// A custom resource's structural schema (`openAPIV3Schema`), nil for built-in types.
    var schema: JSON?

    /// `v1` or `<group>/<version>`.
    var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

    static let pods = ResourceType(plural: "pods", kind: "Pod", namespaced: true, shortNames: ["po"], singular: "pod")
    static let events = ResourceType(
        plural: "events",
        kind: "Event",
        namespaced: true,
        shortNames: ["ev"],
        singular: "event"
    )
    static let nodes = ResourceType(
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        shortNames: ["no"],
        singular: "node"
    )
    static let namespaces = ResourceType(
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        shortNames: ["ns"],
        singular: "namespace"
    )
    static let secrets = ResourceType(
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        shortNames: [],
        singular: "secret"
    )
    static let all: [ResourceType] = [.pods, .events, .nodes, .namespaces, .secrets]

    static func named(_ plural: String) -> ResourceType? { all.first { $0.plural == plural } }
}

/// One change, as watches see it.
struct Change: Sendable {
    var revision: Int64
    var resource: String
    var type: String
    var object: JSON
    var previous: JSON?
}

/// One frame of a watch response.
enum WatchFrame: Sendable {
    case event(type: String, object: JSON)
    case end
}

/// A registered watch: filtered changes are queued here and the connection is woken to write them.
final class Watcher: Sendable {
    let resource: ResourceType
    let filter: ObjectFilter
    let wake: @Sendable () -> Void
    private let queue = Mutex<(frames: [WatchFrame], overflowed: Bool)>(([], false))
    static let maximumQueued = 10_000

    init(resource: ResourceType, filter: ObjectFilter, wake: @escaping @Sendable () -> Void) {
        self.resource = resource
        self.filter = filter
        self.wake = wake
    }

    /// Queues a frame; a watcher that falls too far behind is ended, like the real server does with
    /// an unresponsive watcher.
    func enqueue(_ frame: WatchFrame) {
        queue.withLock { queue in
            guard !queue.overflowed else { return }
            if queue.frames.count >= Watcher.maximumQueued {
                queue.overflowed = true
                queue.frames.append(.end)
            } else {
                queue.frames.append(frame)
            }
        }
    }

    /// Takes every queued frame.
    func drain() -> [WatchFrame] {
        queue.withLock { queue in
            let frames = queue.frames
            queue.frames = []
            return frames
        }
    }

    /// The frame for a change, given the filter (selector transitions become ADDED/DELETED).
    func frame(for change: Change) -> WatchFrame? {
        let wasMatching = change.previous.map(filter.matches) ?? false
        switch change.type {
        case "ADDED":
            return filter.matches(change.object) ? .event(type: "ADDED", object: change.object) : nil
        case "DELETED":
            return filter.matches(change.object) ? .event(type: "DELETED", object: change.object) : nil
        default:
            let isMatching = filter.matches(change.object)
            switch (wasMatching, isMatching) {
            case (true, true): return .event(type: "MODIFIED", object: change.object)
            case (false, true): return .event(type: "ADDED", object: change.object)
            case (true, false): return .event(type: "DELETED", object: change.object)
            case (false, false): return nil
            }
        }
    }
}

/// The double's storage: objects by resource and key, one global revision counter (etcd's), the
/// change history watches resume from, and the registered watches.
final class Store: Sendable {
    struct Key: Hashable, Comparable, Sendable {
        var namespace: String
        var name: String
        static func < (a: Key, b: Key) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
    }

    struct State {
        var revision: Int64 = 1000
        var objects: [String: [Key: JSON]] = [:]
        var history: [Change] = []
        /// Watches and continue tokens from before this revision get 410 Gone.
        var compactedRevision: Int64 = 0
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
    }

    let state = Mutex(State())
    /// Changes kept for watches; older ones are compacted automatically.
    let historyLimit: Int

    init(historyLimit: Int = 10_000) {
        self.historyLimit = historyLimit
    }

    var revision: Int64 { state.withLock { $0.revision } }

    func get(_ resource: ResourceType, _ key: Key) -> JSON? {
        state.withLock { $0.objects[resource.plural]?[key] }
    }

    /// Every object of a resource that matches, sorted by key, and the current revision.
    func list(_ resource: ResourceType, filter: ObjectFilter) -> ([(Key, JSON)], Int64) {
        state.withLock { state in
            let objects = (state.objects[resource.plural] ?? [:]).filter { filter.matches($0.value) }
            return (objects.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, state.revision)
        }
    }

    /// Runs `body` on the current object under the lock and applies what it returns: a new object
    /// (created or replaced, with the next resourceVersion), a deletion, or nothing (unchanged).
    enum Outcome {
        case put(JSON)
        case delete
        case unchanged(JSON)
    }

    @discardableResult
    func modify(
        _ resource: ResourceType,
        _ key: Key,
        _ body: (JSON?) throws(StatusError) -> Outcome
    ) throws(StatusError)
        -> JSON
    {
        let (result, wake): (JSON, [Watcher]) = try state.withLock { (state) throws(StatusError) -> (JSON, [Watcher]) in
            let current = state.objects[resource.plural]?[key]
            switch try body(current) {
            case .unchanged(let object):
                return (object, [])
            case .put(var object):
                state.revision += 1
                object[path: ["metadata", "resourceVersion"]] = .string(String(state.revision))
                state.objects[resource.plural, default: [:]][key] = object
                let change = Change(
                    revision: state.revision,
                    resource: resource.plural,
                    type: current == nil ? "ADDED" : "MODIFIED",
                    object: object,
                    previous: current
                )
                return (object, record(change, in: &state))
            case .delete:
                guard var object = current else { throw StatusError.notFound(resource.plural, key.name) }
                state.revision += 1
                object[path: ["metadata", "resourceVersion"]] = .string(String(state.revision))
                state.objects[resource.plural]?[key] = nil
                let change = Change(
                    revision: state.revision,
                    resource: resource.plural,
                    type: "DELETED",
                    object: object,
                    previous: current
                )
                return (object, record(change, in: &state))
            }
        }
        for watcher in wake { watcher.wake() }
        return result
    }

    private func record(_ change: Change, in state: inout State) -> [Watcher] {
        state.history.append(change)
        if state.history.count > historyLimit {
            let dropped = state.history.count - historyLimit
            state.compactedRevision = state.history[dropped - 1].revision + 1
            state.history.removeFirst(dropped)
        }
        var wake: [Watcher] = []
        for watcher in state.watchers.values where watcher.resource.plural == change.resource {
            if let frame = watcher.frame(for: change) {
                watcher.enqueue(frame)
                wake.append(watcher)
            }
        }
        return wake
    }

    /// Forgets the history: watches and continue tokens from before now get 410 Gone.
    func compact() {
        state.withLock { state in
            state.compactedRevision = state.revision + 1
            state.history = []
        }
    }

    /// Whether a resourceVersion is older than the compaction point.
    func isCompacted(_ revision: Int64) -> Bool {
        state.withLock { revision + 1 < $0.compactedRevision }
    }

    var compactedRevision: Int64 { state.withLock { $0.compactedRevision } }

    /// Registers a watch from `resourceVersion` (nil or "0": start with ADDED events for every
    /// current object) and queues the events it must see first, atomically.
    /// - Throws: ``StatusError`` 410 (as the caller's choice of an HTTP answer or an ERROR event)
    ///   when the version was compacted.
    func openWatch(
        _ resource: ResourceType,
        filter: ObjectFilter,
        from resourceVersion: Int64?,
        watcher: Watcher
    )
        throws(StatusError) -> Int
    {
        let (id, wake) = try state.withLock { (state) throws(StatusError) -> (Int, Bool) in
            if let resourceVersion {
                if resourceVersion + 1 < state.compactedRevision {
                    throw StatusError.gone(
                        "too old resource version: \(resourceVersion) (\(state.compactedRevision - 1))"
                    )
                }
                for change in state.history
                where change.revision > resourceVersion && change.resource == resource.plural {
                    if let frame = watcher.frame(for: change) { watcher.enqueue(frame) }
                }
            } else {
                let objects = (state.objects[resource.plural] ?? [:]).sorted { $0.key < $1.key }
                for (_, object) in objects where filter.matches(object) {
                    watcher.enqueue(.event(type: "ADDED", object: object))
                }
            }
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = watcher
            return (state.nextWatcher, true)
        }
        if wake { watcher.wake() }
        return id
    }

    func closeWatch(_ id: Int) {
        state.withLock { _ = $0.watchers.removeValue(forKey: id) }
    }

    /// Ends every open watch (the server closing them, e.g. on restart).
    func endAllWatches() {
        let watchers = state.withLock { state in
            let watchers = Array(state.watchers.values)
            state.watchers = [:]
            return watchers
        }
        for watcher in watchers {
            watcher.enqueue(.end)
            watcher.wake()
        }
    }

    var openWatchCount: Int { state.withLock { $0.watchers.count } }
}
