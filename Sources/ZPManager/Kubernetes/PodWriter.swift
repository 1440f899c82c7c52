// The manager's Kubernetes writes on ZPKube (decision 0030): the pods of this node through an
// informer (list + watch with `spec.nodeName=<node>`), and per dirty pod the PodPlanner's plan as
// patches that touch only the manager's label, annotations and requests — a JSON merge patch of
// the metadata on the pod, then a strategic merge patch of the requests on `pods/<name>/resize`
// (or on the pod where the server has no such subresource: Kubernetes before 1.32). No
// resourceVersion precondition is needed for fields only the manager writes, so there is no 409
// and no retry loop around it; events are created with a name derived from the occurrence, so a
// repeated create is refused as AlreadyExists instead of making a duplicate.
import Foundation
import Logging
import Synchronization
import ZPKube

/// Writes status labels, resized requests and events for the pods of one node.
public final class PodWriter: Sendable {
    /// How the server resizes a pod's requests.
    public enum ResizeRoute: Sendable, Hashable {
        /// `PATCH pods/<name>/resize` (Kubernetes 1.32+; required from 1.33).
        case subresource
        /// `PATCH pods/<name>` with the new requests (1.27–1.31 with InPlacePodVerticalScaling).
        case pod
    }

    /// Settings of the writer.
    public struct Options: Sendable {
        /// Which pod writes are on.
        public var features: PodFeatures
        /// Whether events are written.
        public var events: Bool
        /// The node whose pods are watched.
        public var nodeName: String
        /// Who reports the events.
        public var reporter: EventReporter
        /// Pods reconciled at the same time.
        public var workers = 4
        /// The first retry delay of a failed pod; it doubles up to ``maximumRetryDelay``.
        public var retryDelay: Duration = .milliseconds(200)
        /// The longest retry delay.
        public var maximumRetryDelay: Duration = .seconds(30)
        /// Attempts of one event before it is dropped.
        public var eventAttempts = 6
        /// The informer's settings (selectors are set from ``nodeName``).
        public var informer = InformerOptions()
        /// The `fieldManager` of every write.
        public var fieldManager = "zeropod-manager"

        /// Options for a node.
        public init(features: PodFeatures, events: Bool, nodeName: String, reporter: EventReporter) {
            self.features = features
            self.events = events
            self.nodeName = nodeName
            self.reporter = reporter
        }
    }

    /// What the writer did so far.
    public struct Statistics: Sendable, Hashable {
        /// Metadata patches (labels, annotations) that succeeded.
        public var metadataPatches = 0
        /// Resize patches that succeeded.
        public var resizePatches = 0
        /// Events created.
        public var eventsCreated = 0
        /// Event creations answered AlreadyExists (a repeat that made no duplicate).
        public var eventsAlreadyExisting = 0
        /// Events given up.
        public var eventsDropped = 0
        /// Failed writes (each retried later).
        public var failures = 0
        /// Resizes the server refused as invalid (not retried until the pod changes again).
        public var resizesRefused = 0
        /// Milliseconds from a container's phase change (shim clock) to the label write that
        /// reported it, the latest 4096.
        public var labelDelaysMilliseconds: [Double] = []
        /// The resize route in use.
        public var route: ResizeRoute?
    }

    private let client: KubeClient
    private let queue: WorkQueue
    private let state: NodeState
    private let options: Options
    private let logger: Logger
    /// The informer of this node's pods.
    public let informer: Informer<Pod>
    private let written = Mutex<[PodKey: Pod]>([:])
    private let failures = Mutex<[PodKey: Int]>([:])
    private let stats = Mutex(Statistics())
    private let route = Mutex<ResizeRoute?>(nil)

    /// A writer for `options.nodeName`'s pods.
    public init(client: KubeClient, state: NodeState, options: Options, logger: Logger) {
        self.client = client
        self.queue = state.queue
        self.state = state
        self.options = options
        self.logger = logger
        var informerOptions = options.informer
        informerOptions.fieldSelector = "spec.nodeName=\(options.nodeName)"
        self.informer = Informer(client: client, resource: .pods, options: informerOptions, logger: logger)
    }

    /// What the writer did so far.
    public var statistics: Statistics { stats.withLock { $0 } }

    /// Runs the informer, the pod workers, the retry timer and the event writer until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.informer.run() }
            group.addTask {
                for await keys in self.informer.changes() {
                    self.queue.markDirty(keys.map { PodKey(namespace: $0.namespace, name: $0.name) })
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    self.queue.promoteDueRetries()
                }
            }
            if options.features.any {
                for _ in 0..<max(1, options.workers) {
                    group.addTask {
                        await self.informer.waitForSync()
                        while let key = await self.queue.nextPod() {
                            let retry = await self.reconcile(key)
                            self.queue.done(key, retryAfter: retry)
                        }
                    }
                }
            }
            if options.events {
                group.addTask {
                    await self.informer.waitForSync()
                    while let event = await self.queue.nextEvent() {
                        await self.write(event)
                    }
                }
            }
            group.addTask {
                // Ends the queue's consumers when the group is cancelled.
                await withTaskCancellationHandler {
                    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                } onCancel: {
                    self.queue.finish()
                }
            }
        }
    }

    // MARK: - pods

    /// The newest copy of a pod: the informer's, or the answer to this writer's last patch when
    /// that is newer (the informer may not have seen the patch yet). resourceVersions are compared
    /// as numbers, which they are on every server (etcd revisions); if one is not, the informer's
    /// copy wins.
    func current(_ key: PodKey) -> Pod? {
        let cached = informer.object(ObjectKey(namespace: key.namespace, name: key.name))
        let mine = written.withLock { $0[key] }
        guard let cached else { return nil }
        guard let mine, mine.metadata.uid == cached.metadata.uid,
            let a = mine.metadata.resourceVersion.flatMap(Int64.init),
            let b = cached.metadata.resourceVersion.flatMap(Int64.init), a > b
        else {
            written.withLock { _ = $0.removeValue(forKey: key) }
            return cached
        }
        return mine
    }

    /// Brings one pod to its plan; returns a retry delay after a failure.
    func reconcile(_ key: PodKey) async -> Duration? {
        guard let pod = current(key) else {
            written.withLock { _ = $0.removeValue(forKey: key) }
            failures.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        }
        let (phases, changedAt) = state.phases(of: key, uid: pod.metadata.uid)
        if phases.isEmpty { return nil }
        let plan = PodPlanner.plan(pod: pod, phases: phases, features: options.features)
        if let reason = plan.resizeSkipped {
            logger.debug("resize skipped", metadata: ["pod": "\(key)", "reason": "\(reason)"])
        }
        if plan.isEmpty {
            failures.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        }
        do throws(KubeError) {
            if let patch = plan.metadataPatch {
                let updated = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: key.namespace,
                    name: key.name,
                    patch: .merge(patch),
                    options: WriteOptions(fieldManager: options.fieldManager)
                )
                remember(key, updated)
                let labelsChanged = patch[path: ["metadata", "labels"]] != nil
                stats.withLock { s in
                    s.metadataPatches += 1
                    if labelsChanged, changedAt > 0 {
                        let delay = (Date().timeIntervalSince1970 * 1e9 - Double(changedAt)) / 1e6
                        s.labelDelaysMilliseconds.append(delay)
                        if s.labelDelaysMilliseconds.count > 4096 { s.labelDelaysMilliseconds.removeFirst() }
                    }
                }
                logger.debug("pod metadata patched", metadata: ["pod": "\(key)", "patch": "\(patch)"])
            }
            if let patch = plan.resizePatch {
                try await resize(key, patch)
            }
            failures.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        } catch {
            return handle(error, pod: key)
        }
    }

    private func remember(_ key: PodKey, _ pod: Pod) {
        written.withLock { $0[key] = pod }
    }

    private func resize(_ key: PodKey, _ patch: JSON) async throws(KubeError) {
        var route = try await resizeRoute()
        while true {
            do throws(KubeError) {
                let updated: Pod
                switch route {
                case .subresource:
                    updated = try await client.patch(
                        Pod.self,
                        .pods,
                        namespace: key.namespace,
                        name: key.name,
                        patch: .strategicMerge(patch),
                        subresource: "resize",
                        options: WriteOptions(fieldManager: options.fieldManager)
                    )
                case .pod:
                    updated = try await client.patch(
                        Pod.self,
                        .pods,
                        namespace: key.namespace,
                        name: key.name,
                        patch: .strategicMerge(patch),
                        options: WriteOptions(fieldManager: options.fieldManager)
                    )
                }
                remember(key, updated)
                stats.withLock { $0.resizePatches += 1 }
                logger.debug("pod resized", metadata: ["pod": "\(key)", "route": "\(route)", "patch": "\(patch)"])
                return
            } catch  where error.kind == .notFound && route == .subresource && !isPodNotFound(error, key) {
                // The server has no resize subresource after all (the original's fallback).
                logger.info("the API server has no pods/resize: resizing through the pod", metadata: ["pod": "\(key)"])
                self.route.withLock { $0 = .pod }
                stats.withLock { $0.route = .pod }
                route = .pod
            }
        }
    }

    /// Whether a 404 says the pod itself is gone (rather than the subresource missing).
    private func isPodNotFound(_ error: KubeError, _ key: PodKey) -> Bool {
        error.status?.details?.name == key.name && error.status?.details?.kind == "pods"
    }

    /// The resize route, read from the server's discovery document once (`pods/resize` listed in
    /// `/api/v1`).
    func resizeRoute() async throws(KubeError) -> ResizeRoute {
        if let known = route.withLock({ $0 }) { return known }
        let response = try await client.send(verb: "GET", path: "/api/v1")
        let document = try? JSON(parsing: response.body)
        let names = document?["resources"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        let found: ResizeRoute = names.contains("pods/resize") ? .subresource : .pod
        route.withLock { $0 = found }
        stats.withLock { $0.route = found }
        logger.info("resize route", metadata: ["route": "\(found)"])
        return found
    }

    private func handle(_ error: KubeError, pod key: PodKey) -> Duration? {
        switch error.kind {
        case .notFound:
            logger.debug("pod gone before the write", metadata: ["pod": "\(key)"])
            written.withLock { _ = $0.removeValue(forKey: key) }
            failures.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        case .invalid:
            failures.withLock { _ = $0.removeValue(forKey: key) }
            stats.withLock { $0.resizesRefused += 1 }
            logger.warning(
                "the API server refused the write (is InPlacePodVerticalScaling enabled?)",
                metadata: ["pod": "\(key)", "error": "\(error)"]
            )
            return nil
        case .badRequest, .unauthorized, .forbidden, .methodNotAllowed, .conflict, .gone, .unsupportedMediaType,
            .tooManyRequests, .serverError, .otherHTTPStatus, .timedOut, .unreachable, .malformedResponse, .cancelled:
            let attempt = failures.withLock { f -> Int in
                f[key, default: 0] += 1
                return f[key]!
            }
            stats.withLock { $0.failures += 1 }
            var delay = options.retryDelay
            for _ in 1..<min(attempt, 16) { delay = min(delay * 2, options.maximumRetryDelay) }
            if let after = error.retryAfter, after > delay { delay = after }
            logger.warning(
                "pod write failed, retrying",
                metadata: ["pod": "\(key)", "error": "\(error)", "attempt": "\(attempt)", "delay": "\(delay)"]
            )
            return delay
        }
    }

    // MARK: - events

    private func write(_ pending: PendingEvent) async {
        var pending = pending
        while !Task.isCancelled {
            pending.attempts += 1
            guard let pod = current(pending.pod) else {
                // Not in the cache (yet): the informer may be behind the shim.
                if pending.attempts >= options.eventAttempts * 4 {
                    drop(pending, reason: "the pod is not on this node")
                    return
                }
                try? await Task.sleep(for: .milliseconds(250))
                continue
            }
            if !pending.podUID.isEmpty, let uid = pod.metadata.uid, uid != pending.podUID {
                drop(pending, reason: "the pod was replaced")
                return
            }
            let event = EventPlanner.event(
                pending.occurrence,
                container: pending.container,
                containerID: pending.containerID,
                pod: pod,
                time: pending.time,
                identity: pending.identity,
                reporter: options.reporter
            )
            do throws(KubeError) {
                _ = try await client.create(event, .events, namespace: pending.pod.namespace)
                stats.withLock { $0.eventsCreated += 1 }
                logger.debug(
                    "event created",
                    metadata: ["pod": "\(pending.pod)", "reason": "\(pending.occurrence.reason)"]
                )
                return
            } catch {
                if error.kind == .conflict, error.reason == "AlreadyExists" {
                    stats.withLock { $0.eventsAlreadyExisting += 1 }
                    return
                }
                if error.kind == .invalid || error.kind == .forbidden || error.kind == .badRequest
                    || pending.attempts >= options.eventAttempts
                {
                    drop(pending, reason: "\(error)")
                    return
                }
                stats.withLock { $0.failures += 1 }
                var delay = options.retryDelay
                for _ in 1..<pending.attempts { delay = min(delay * 2, options.maximumRetryDelay) }
                if let after = error.retryAfter, after > delay { delay = after }
                try? await Task.sleep(for: delay)
            }
        }
    }

    private func drop(_ pending: PendingEvent, reason: String) {
        stats.withLock { $0.eventsDropped += 1 }
        logger.warning(
            "event dropped",
            metadata: [
                "pod": "\(pending.pod)", "container": "\(pending.container)", "reason": "\(pending.occurrence.reason)",
                "why": "\(reason)",
            ]
        )
    }
}
