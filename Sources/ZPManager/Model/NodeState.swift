// What the manager knows about the node's containers, fed by the shim subscriptions: the latest
// report per container, which pods need a Kubernetes write, which events are due, and the
// metrics. One lock; nothing in here waits or does I/O.
import Logging
import Synchronization
import ZPCore

/// The node's containers as their shims last reported them.
public final class NodeState: Sendable {
    private struct Entry {
        var shim: String
        var report: ContainerReport
        /// When the last phase change happened (unix ns, shim clock), for the write-delay figures.
        var phaseChangedAt: Int64
    }

    private struct State {
        var containers: [String: Entry] = [:]
        /// Operations already turned into events, per container: the identity of the last one of
        /// each kind (so a snapshot after a reconnect reports what was missed, once).
        var reported: [String: [String: String]] = [:]
    }

    private let state = Mutex(State())
    /// The pods to reconcile and the events to write.
    public let queue: WorkQueue
    /// The metrics.
    public let metrics: ZeropodMetrics
    /// Whether events are queued (`-status-events`).
    public let eventsEnabled: Bool
    private let logger: Logger

    /// An empty state.
    public init(
        queue: WorkQueue = WorkQueue(),
        metrics: ZeropodMetrics = ZeropodMetrics(),
        eventsEnabled: Bool,
        logger: Logger
    ) {
        self.queue = queue
        self.metrics = metrics
        self.eventsEnabled = eventsEnabled
        self.logger = logger
    }

    // MARK: - reading

    /// The current report of container `id`.
    public func report(_ id: String) -> ContainerReport? { state.withLock { $0.containers[id]?.report } }

    /// Every container known, by id.
    public var reports: [String: ContainerReport] { state.withLock { $0.containers.mapValues(\.report) } }

    /// The phases of the Kubernetes containers of `pod` (container name → phase), and the latest
    /// phase change among them (unix ns). Containers whose pod uid differs from `uid` (an older pod
    /// of the same name) are left out when both uids are known.
    public func phases(
        of pod: PodKey,
        uid: String?
    ) -> (phases: [String: ContainerLifecycle.StatusPhase], changedAt: Int64) {
        state.withLock { s in
            var result: [String: ContainerLifecycle.StatusPhase] = [:]
            var latest: Int64 = 0
            for entry in s.containers.values {
                guard entry.report.isKubernetesContainer, let ref = entry.report.pod,
                    ref.namespace == pod.namespace, ref.name == pod.name
                else { continue }
                if let uid, !uid.isEmpty, !ref.uid.isEmpty, uid != ref.uid { continue }
                if entry.report.phase == .stopping { continue }
                result[entry.report.name] = entry.report.phase
                latest = max(latest, entry.phaseChangedAt)
            }
            return (result, latest)
        }
    }

    // MARK: - updates from the shims

    /// A status change (or a snapshot entry) of one container.
    ///
    /// - Parameters:
    ///   - update: The container after the change (its `occurrence` is logged).
    ///   - shim: The shim's status socket.
    ///   - occurrences: The occurrences to report as events, each with its identity (what tells it
    ///     apart from another of the same kind: an operation's end time, an error count). One whose
    ///     identity was reported already for that container and kind is skipped, so a snapshot
    ///     after a reconnect reports only what was missed.
    public func apply(_ update: StatusUpdate, shim: String, occurrences: [(StatusOccurrence, String)] = []) {
        let report = update.report
        let (changed, first, enqueue) = state.withLock { s -> (Bool, Bool, [PendingEvent]) in
            let previous = s.containers[report.id]
            let phaseChanged = previous?.report.phase != report.phase
            s.containers[report.id] = Entry(
                shim: shim,
                report: report,
                phaseChangedAt: phaseChanged ? update.time : previous?.phaseChangedAt ?? update.time
            )
            var events: [PendingEvent] = []
            for (occurrence, identity) in occurrences {
                if s.reported[report.id]?[occurrence.kindName] == identity { continue }
                s.reported[report.id, default: [:]][occurrence.kindName] = identity
                guard eventsEnabled, report.isKubernetesContainer, let pod = report.pod else { continue }
                events.append(
                    PendingEvent(
                        occurrence: occurrence,
                        container: report.name,
                        containerID: report.id,
                        pod: PodKey(namespace: pod.namespace, name: pod.name),
                        podUID: pod.uid,
                        time: update.time,
                        identity: identity
                    )
                )
            }
            return (phaseChanged, previous == nil, events)
        }
        if changed || update.occurrence != nil {
            var metadata: Logger.Metadata = [
                "container": "\(report.name.isEmpty ? report.id : report.name)", "id": "\(report.id)",
                "pod": "\(report.pod?.name ?? "")", "namespace": "\(report.pod?.namespace ?? "")",
                "phase": "\(report.phase.name)", "lifecycle": "\(report.lifecyclePhase)",
            ]
            if let occurrence = update.occurrence {
                metadata["event"] = "\(occurrence.kindName)"
                if let d = occurrence.duration { metadata["duration"] = "\(EventPlanner.text(d))" }
            }
            if first { metadata["first"] = "true" }
            logger.info("status", metadata: metadata)
        }
        for event in enqueue {
            if let dropped = queue.enqueue(event) {
                logger.warning(
                    "event queue full: dropped the oldest event",
                    metadata: [
                        "pod": "\(dropped.pod)", "container": "\(dropped.container)",
                        "reason": "\(dropped.occurrence.reason)",
                    ]
                )
            }
        }
        if report.isKubernetesContainer, let pod = report.pod, changed || first {
            queue.markDirty(PodKey(namespace: pod.namespace, name: pod.name))
        }
        if report.phase == .stopping { metrics.remove(containerID: report.id) }
    }

    /// Records the occurrence identity a container's snapshot implies without reporting it (the
    /// first sight of a container after the manager started: what happened before is history).
    public func setBaseline(containerID: String, kind: String, identity: String) {
        state.withLock { $0.reported[containerID, default: [:]][kind] = $0.reported[containerID]?[kind] ?? identity }
    }

    /// The identity last reported for `kind` of container `id`.
    public func reportedIdentity(containerID: String, kind: String) -> String? {
        state.withLock { $0.reported[containerID]?[kind] }
    }

    /// Container `id` was removed from its shim (deleted).
    public func remove(containerID id: String) {
        let removed = state.withLock { s -> Entry? in
            s.reported[id] = nil
            return s.containers.removeValue(forKey: id)
        }
        metrics.remove(containerID: id)
        if let removed {
            logger.info(
                "container removed",
                metadata: [
                    "container": "\(removed.report.name)", "id": "\(id)", "pod": "\(removed.report.pod?.name ?? "")",
                    "namespace": "\(removed.report.pod?.namespace ?? "")",
                ]
            )
        }
    }

    /// A shim listed every container it serves: the ones of that shim not listed are gone.
    public func shimListed(_ shim: String, ids: Set<String>) {
        let gone = state.withLock { s in
            s.containers.filter { $0.value.shim == shim && !ids.contains($0.key) }.map(\.key)
        }
        for id in gone { remove(containerID: id) }
    }

    /// A shim went away (its socket was removed): its containers are gone.
    public func shimGone(_ shim: String) {
        shimListed(shim, ids: [])
    }

    /// The containers of a shim.
    public func containers(ofShim shim: String) -> Set<String> {
        state.withLock { s in Set(s.containers.filter { $0.value.shim == shim }.map(\.key)) }
    }
}
