import Logging
import Synchronization

/// An API object with metadata: what an ``Informer`` can cache.
public protocol KubeObject: Codable, Sendable {
    /// The object's metadata.
    var metadata: ObjectMeta { get }
}

extension Pod: KubeObject {}
extension Event: KubeObject {}
extension Node: KubeObject {}

/// Namespace and name of an object: its key in an ``Informer``'s cache.
public struct ObjectKey: Sendable, Hashable, CustomStringConvertible {
    /// The namespace (empty for cluster-scoped objects).
    public var namespace: String
    /// The name.
    public var name: String

    /// A key.
    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    /// The key of an object.
    public init(_ metadata: ObjectMeta) {
        self.init(namespace: metadata.namespace ?? "", name: metadata.name ?? "")
    }

    /// `namespace/name`.
    public var description: String { namespace.isEmpty ? name : "\(namespace)/\(name)" }
}

/// Options of an ``Informer``.
public struct InformerOptions: Sendable {
    /// The label selector of the list and watch.
    public var labelSelector: String?
    /// The field selector (`spec.nodeName=<node>` for the pods on one node).
    public var fieldSelector: String?
    /// The page size of a list (`limit`); nil lists in one page.
    public var pageSize: Int?
    /// `timeoutSeconds` of each watch (default 300); the watch is given up if the server stays
    /// silent past it plus ``KubeConfiguration/watchGrace``.
    public var watchTimeoutSeconds: Int
    /// The backoff after failures.
    public var backoff: Backoff
    /// A watch that ends sooner than this without an event counts as a failure (backoff), so a server
    /// that closes watches at once is not hammered.
    public var minimumWatchDuration: Duration

    /// Informer options.
    public init(
        labelSelector: String? = nil,
        fieldSelector: String? = nil,
        pageSize: Int? = 500,
        watchTimeoutSeconds: Int = 300,
        backoff: Backoff = Backoff(),
        minimumWatchDuration: Duration = .seconds(1)
    ) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.pageSize = pageSize
        self.watchTimeoutSeconds = watchTimeoutSeconds
        self.backoff = backoff
        self.minimumWatchDuration = minimumWatchDuration
    }
}

/// What an informer did so far (for logs, metrics and tests).
public struct InformerStatistics: Sendable, Hashable {
    /// Complete lists (all pages).
    public var lists = 0
    /// Watches opened.
    public var watches = 0
    /// Lists made because the resourceVersion was gone (410 / `Expired`).
    public var relistsAfterGone = 0
    /// Failed requests (each followed by a backoff).
    public var failures = 0
    /// Events applied (ADDED, MODIFIED, DELETED).
    public var events = 0
    /// Bookmarks seen.
    public var bookmarks = 0
    /// The resourceVersion the next watch starts from.
    public var resourceVersion: String?
}

/// List + watch of one resource, kept as a cache of the current objects with coalesced change
/// notifications (client-go's reflector, store and work queue in one).
///
/// ``run()`` lists, then watches from the list's resourceVersion, resumes each new watch from the
/// last resourceVersion seen (events and bookmarks), lists again when that version is gone (HTTP
/// 410 or an ERROR event with code 410), and backs off exponentially with jitter on failures,
/// waiting at least a 429's `Retry-After`.
///
/// Memory is bounded by the number of objects: ``changes()`` yields the keys changed since the last
/// batch (a key changed ten times is one entry), and the consumer reads the current object with
/// ``object(_:)`` — nil when it was deleted. There is one consumer of ``changes()``.
public final class Informer<Object: KubeObject>: Sendable {
    private struct State {
        var objects: [ObjectKey: Object] = [:]
        var pending: [ObjectKey] = []
        var pendingSet: Set<ObjectKey> = []
        var waiter: CheckedContinuation<[ObjectKey]?, Never>?
        var synced = false
        var syncWaiters: [CheckedContinuation<Void, Never>] = []
        var finished = false
        var statistics = InformerStatistics()
    }

    private let client: KubeClient
    private let resource: KubeResource
    private let namespace: String?
    private let options: InformerOptions
    private let logger: Logger
    private let state = Mutex(State())

    /// An informer for `resource` (in `namespace`, or all namespaces when nil).
    public init(
        client: KubeClient,
        resource: KubeResource,
        namespace: String? = nil,
        options: InformerOptions = InformerOptions(),
        logger: Logger = Logger(label: "zeropod.kube.informer")
    ) {
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.options = options
        self.logger = logger
    }

    // MARK: - reading

    /// The cached object with this key, nil if there is none (never listed, or deleted).
    public func object(_ key: ObjectKey) -> Object? {
        state.withLock { $0.objects[key] }
    }

    /// Every cached object.
    public var objects: [Object] {
        state.withLock { Array($0.objects.values) }
    }

    /// Whether the first list completed.
    public var hasSynced: Bool { state.withLock { $0.synced } }

    /// What the informer did so far.
    public var statistics: InformerStatistics { state.withLock { $0.statistics } }

    /// Waits until the first list completed (or ``run()`` ended).
    public func waitForSync() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.synced || state.finished { return true }
                state.syncWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// The keys that changed, in batches; ends when ``run()`` ends. One consumer only.
    public func changes() -> Changes { Changes(informer: self) }

    /// The coalesced change batches of an informer.
    public struct Changes: AsyncSequence, Sendable {
        /// A batch of changed keys (each once, in the order of their first change).
        public typealias Element = [ObjectKey]
        let informer: Informer

        /// The iterator.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let informer: Informer
            /// The next batch; nil after ``Informer/run()`` ended.
            public mutating func next() async -> [ObjectKey]? {
                await informer.nextBatch()
            }
        }

        /// Starts reading batches.
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(informer: informer) }
    }

    private func nextBatch() async -> [ObjectKey]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[ObjectKey]?, Never>) in
            let ready = state.withLock { state -> [ObjectKey]?? in
                if !state.pending.isEmpty {
                    let batch = state.pending
                    state.pending = []
                    state.pendingSet = []
                    return .some(batch)
                }
                if state.finished { return .some(nil) }
                precondition(state.waiter == nil, "Informer.changes() has one consumer")
                state.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    // MARK: - cache updates (the lock is released before a waiter is resumed)

    private func mark(
        _ keys: [ObjectKey],
        in state: inout State
    ) -> (CheckedContinuation<[ObjectKey]?, Never>, [ObjectKey])? {
        for key in keys where state.pendingSet.insert(key).inserted {
            state.pending.append(key)
        }
        if let waiter = state.waiter, !state.pending.isEmpty {
            state.waiter = nil
            let batch = state.pending
            state.pending = []
            state.pendingSet = []
            return (waiter, batch)
        }
        return nil
    }

    private func replaceAll(with items: [Object], resourceVersion: String?) {
        let (wake, syncWaiters) = state.withLock { state in
            var changed: [ObjectKey] = []
            var fresh: [ObjectKey: Object] = [:]
            for item in items {
                let key = ObjectKey(item.metadata)
                fresh[key] = item
                if state.objects[key]?.metadata.resourceVersion != item.metadata.resourceVersion
                    || state.objects[key] == nil
                {
                    changed.append(key)
                }
            }
            for key in state.objects.keys where fresh[key] == nil { changed.append(key) }
            state.objects = fresh
            state.statistics.lists += 1
            state.statistics.resourceVersion = resourceVersion
            var waiters: [CheckedContinuation<Void, Never>] = []
            if !state.synced {
                state.synced = true
                waiters = state.syncWaiters
                state.syncWaiters = []
            }
            return (mark(changed, in: &state), waiters)
        }
        for waiter in syncWaiters { waiter.resume() }
        if let (waiter, batch) = wake { waiter.resume(returning: batch) }
    }

    private func apply(_ event: WatchEvent<Object>) -> (resourceVersion: String?, expired: Status?, failure: Status?) {
        var result: (String?, Status?, Status?) = (nil, nil, nil)
        let wake = state.withLock { state -> (CheckedContinuation<[ObjectKey]?, Never>, [ObjectKey])? in
            switch event {
            case .added(let object), .modified(let object):
                let key = ObjectKey(object.metadata)
                state.objects[key] = object
                state.statistics.events += 1
                result.0 = object.metadata.resourceVersion
                state.statistics.resourceVersion = result.0 ?? state.statistics.resourceVersion
                return mark([key], in: &state)
            case .deleted(let object):
                let key = ObjectKey(object.metadata)
                state.objects[key] = nil
                state.statistics.events += 1
                result.0 = object.metadata.resourceVersion
                state.statistics.resourceVersion = result.0 ?? state.statistics.resourceVersion
                return mark([key], in: &state)
            case .bookmark(let version):
                state.statistics.bookmarks += 1
                if !version.isEmpty {
                    result.0 = version
                    state.statistics.resourceVersion = version
                }
                return nil
            case .error(let status):
                if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" {
                    result.1 = status
                } else {
                    result.2 = status
                }
                return nil
            }
        }
        if let (waiter, batch) = wake { waiter.resume(returning: batch) }
        return result
    }

    private func count(_ update: (inout InformerStatistics) -> Void) {
        state.withLock { update(&$0.statistics) }
    }

    // MARK: - the loop

    private enum WatchOutcome {
        case ended(resourceVersion: String, sawEvents: Bool)
        case expired
    }

    /// Lists and watches until the calling task is cancelled; failures are retried with backoff,
    /// never thrown. Afterwards ``changes()`` ends.
    public func run() async {
        var backoff = options.backoff
        var resourceVersion: String?
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do throws(KubeError) {
                if resourceVersion == nil {
                    resourceVersion = try await listAll()
                    backoff.reset()
                }
                count { $0.watches += 1 }
                switch try await watchOnce(from: resourceVersion!) {
                case .ended(let version, let sawEvents):
                    resourceVersion = version
                    if sawEvents || ContinuousClock.now - started >= options.minimumWatchDuration {
                        backoff.reset()
                    } else {
                        count { $0.failures += 1 }
                        try? await client.sleep(backoff.nextDelay())
                    }
                case .expired:
                    logger.debug("resourceVersion expired: listing again", metadata: ["resource": "\(resource)"])
                    count { $0.relistsAfterGone += 1 }
                    resourceVersion = nil
                }
            } catch {
                if error.kind == .cancelled || Task.isCancelled { break }
                if error.kind == .gone {
                    count { $0.relistsAfterGone += 1 }
                    resourceVersion = nil
                    continue
                }
                count { $0.failures += 1 }
                var delay = backoff.nextDelay()
                if let retryAfter = error.retryAfter, retryAfter > delay { delay = retryAfter }
                logger.debug(
                    "list/watch failed, retrying",
                    metadata: ["error": "\(error)", "delay": "\(delay)"]
                )
                do { try await client.sleep(delay) } catch { break }
            }
        }
        let (waiter, syncWaiters) = state.withLock { state in
            state.finished = true
            let waiter = state.pending.isEmpty ? state.waiter : nil
            if waiter != nil { state.waiter = nil }
            let syncWaiters = state.syncWaiters
            state.syncWaiters = []
            return (waiter, syncWaiters)
        }
        waiter?.resume(returning: nil)
        for syncWaiter in syncWaiters { syncWaiter.resume() }
    }

    /// Lists every page; returns the list's resourceVersion.
    private func listAll() async throws(KubeError) -> String {
        var items: [Object] = []
        var continueToken: String?
        var version = ""
        repeat {
            let page = try await client.list(
                Object.self,
                resource,
                namespace: namespace,
                options: ListOptions(
                    labelSelector: options.labelSelector,
                    fieldSelector: options.fieldSelector,
                    limit: options.pageSize,
                    continueToken: continueToken
                )
            )
            items += page.items
            continueToken = page.metadata.continue.flatMap { $0.isEmpty ? nil : $0 }
            version = page.metadata.resourceVersion ?? version
        } while continueToken != nil
        replaceAll(with: items, resourceVersion: version)
        return version
    }

    private struct WatchDeadline: Error {}

    /// One watch from `resourceVersion`, bounded by its timeout plus the grace.
    private func watchOnce(from resourceVersion: String) async throws(KubeError) -> WatchOutcome {
        let watchOptions = WatchOptions(
            labelSelector: options.labelSelector,
            fieldSelector: options.fieldSelector,
            resourceVersion: resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: options.watchTimeoutSeconds
        )
        let limit = Duration.seconds(options.watchTimeoutSeconds) + client.configuration.watchGrace
        let client = self.client
        let resource = self.resource
        let namespace = self.namespace
        do {
            return try await withThrowingTaskGroup(of: WatchOutcome.self) { group in
                group.addTask {
                    let stream = try await client.watch(
                        Object.self,
                        resource,
                        namespace: namespace,
                        options: watchOptions
                    )
                    var version = resourceVersion
                    var sawEvents = false
                    for try await event in stream {
                        let (newVersion, expired, failure) = self.apply(event)
                        if expired != nil { return .expired }
                        if let failure {
                            throw KubeError(
                                kind: KubeError.kind(forHTTPStatus: failure.code ?? 500),
                                verb: "GET",
                                path: resource.collectionPath(namespace: namespace),
                                httpStatus: failure.code,
                                status: failure
                            )
                        }
                        if let newVersion { version = newVersion }
                        if case .bookmark = event {} else { sawEvents = true }
                    }
                    return .ended(resourceVersion: version, sawEvents: sawEvents)
                }
                group.addTask {
                    try await Task.sleep(for: limit)
                    throw WatchDeadline()
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as KubeError {
            throw error
        } catch is WatchDeadline {
            throw KubeError(
                kind: .timedOut,
                verb: "GET",
                path: resource.collectionPath(namespace: namespace),
                underlying: WatchDeadline()
            )
        } catch {
            throw KubeError(kind: .cancelled, verb: "GET", path: resource.collectionPath(namespace: namespace))
        }
    }
}
