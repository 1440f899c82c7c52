// Every shim of the node, followed: one subscription per status socket, started when the socket
// appears and ended when it goes. A subscription asks for the snapshot, lists the shim's
// containers (the authoritative set, so containers deleted while the stream was lost go away),
// reads the shim's cumulative metrics, then applies each change as it comes; a lost stream is
// reconnected with backoff while the socket exists, and the snapshot is compared with what was
// known, so no phase change is lost.
import Logging
import NIOCore
import NIOPosix
import Synchronization
import ZPAPI
import ZPCore

/// Connections to the shims' status services, feeding a ``NodeState``.
public final class ShimFleet: Sendable {
    /// Settings of the subscriptions.
    public struct Options: Sendable {
        /// The first reconnect delay; it doubles up to ``maximumBackoff``.
        public var initialBackoff: Duration = .milliseconds(100)
        /// The longest reconnect delay.
        public var maximumBackoff: Duration = .seconds(5)
        /// How long a connection attempt or a unary call may take.
        public var callTimeout: Duration = .seconds(10)

        /// Default options.
        public init() {}
    }

    /// What the fleet did (for tests and the benchmark).
    public struct Statistics: Sendable, Hashable {
        /// Subscriptions opened (first connections and reconnects).
        public var subscriptions = 0
        /// Subscriptions open now.
        public var open = 0
        /// Connection or stream failures.
        public var failures = 0
        /// Changes applied.
        public var changes = 0
        /// Changes the shims said this manager missed (`missed` counters).
        public var missed: UInt64 = 0
        /// Metrics calls.
        public var metricsCalls = 0
    }

    private let state: NodeState
    private let directory: ShimDirectory
    private let options: Options
    private let logger: Logger
    private let group: any EventLoopGroup
    private let wanted = Mutex<Set<String>>([])
    private let clients = Mutex<[String: ShimStatusClient]>([:])
    private let stats = Mutex(Statistics())
    private let directoryStats = Mutex(ShimDirectory.Statistics())

    /// A fleet following `directory`'s sockets into `state`.
    public init(
        state: NodeState,
        directory: ShimDirectory,
        options: Options = Options(),
        logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.state = state
        self.directory = directory
        self.options = options
        self.logger = logger
        self.group = group
    }

    /// What the subscriptions did so far.
    public var statistics: Statistics { stats.withLock { $0 } }
    /// What the folder watcher did so far.
    public var directoryStatistics: ShimDirectory.Statistics { directoryStats.withLock { $0 } }
    /// The sockets followed now.
    public var shims: Set<String> { wanted.withLock { $0 } }

    /// Follows the shims until the task is cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            await directory.run(
                logger: logger,
                statistics: { s in self.directoryStats.withLock { $0 = s } },
                onChange: { sockets in
                    let (added, removed) = wanted.withLock { current -> (Set<String>, Set<String>) in
                        let added = sockets.subtracting(current)
                        let removed = current.subtracting(sockets)
                        current = sockets
                        return (added, removed)
                    }
                    for socket in removed.sorted() {
                        logger.info("shim gone", metadata: ["socket": "\(socket)"])
                        let client = clients.withLock { $0.removeValue(forKey: socket) }
                        await client?.close()
                        state.shimGone(socket)
                    }
                    for socket in added.sorted() {
                        logger.info("shim found", metadata: ["socket": "\(socket)"])
                        group.addTask { await self.follow(socket) }
                    }
                }
            )
            // Cancelled: close every connection so the subscriptions end.
            let open = clients.withLock { c -> [ShimStatusClient] in
                defer { c = [:] }
                return Array(c.values)
            }
            for client in open { await client.close() }
        }
    }

    private func isWanted(_ socket: String) -> Bool { wanted.withLock { $0.contains(socket) } }

    /// One shim: subscribe, reconnect with backoff while its socket is wanted.
    func follow(_ socket: String) async {
        var backoff = options.initialBackoff
        var lostLogged = false
        while !Task.isCancelled, isWanted(socket) {
            do {
                try await subscribeOnce(socket) {
                    backoff = options.initialBackoff
                    lostLogged = false
                }
                logger.debug("status stream ended", metadata: ["socket": "\(socket)"])
            } catch {
                stats.withLock { $0.failures += 1 }
                if !lostLogged, isWanted(socket) {
                    logger.warning(
                        "status stream lost, reconnecting",
                        metadata: ["socket": "\(socket)", "error": "\(error)"]
                    )
                    lostLogged = true
                }
            }
            if let client = clients.withLock({ $0.removeValue(forKey: socket) }) { await client.close() }
            guard !Task.isCancelled, isWanted(socket) else { break }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, options.maximumBackoff)
        }
    }

    private func subscribeOnce(_ socket: String, connected: () -> Void) async throws {
        let client = try await withTimeout(options.callTimeout) { [group] in
            try await ShimStatusClient.connect(socketPath: socket, group: group)
        }
        clients.withLock { $0[socket] = client }
        guard isWanted(socket) else {
            await client.close()
            return
        }
        stats.withLock {
            $0.subscriptions += 1
            $0.open += 1
        }
        defer { stats.withLock { $0.open -= 1 } }
        let stream = client.subscribe(initialSnapshot: true)
        // The authoritative set after the subscription started: containers of this shim that are
        // not listed were deleted while no stream was open.
        let listed = try await withTimeout(options.callTimeout) { try await client.list() }
        state.shimListed(socket, ids: Set(listed.map(\.id)))
        try await refreshMetrics(client, socket: socket)
        connected()
        for try await change in stream {
            try Task.checkCancellation()
            try await apply(change, socket: socket, client: client)
        }
    }

    private func apply(_ change: StatusAPI.StatusChange, socket: String, client: ShimStatusClient) async throws {
        let report = ShimReports.report(change.status)
        stats.withLock {
            $0.changes += 1
            $0.missed += change.missed
        }
        if change.removed {
            state.remove(containerID: report.id)
            return
        }
        let update = StatusUpdate(
            report: report,
            occurrence: change.event.map(ShimReports.occurrence),
            time: change.time.unixNanoseconds,
            sequence: change.sequence
        )
        if change.snapshot {
            let known = state.report(report.id) != nil
            if !known {
                // First sight: what happened before is history, not news.
                for (kind, identity) in ShimReports.identities(change.status) {
                    state.setBaseline(containerID: report.id, kind: kind, identity: identity)
                }
            }
            let missed = ShimReports.missedOccurrences(change.status, known: known) {
                state.reportedIdentity(containerID: report.id, kind: $0)
            }
            state.apply(update, shim: socket, occurrences: missed)
        } else {
            state.apply(update, shim: socket, occurrences: ShimReports.occurrences(of: change))
        }
        if change.event != nil || change.missed > 0 || report.phase == .stopping {
            try await refreshMetrics(client, socket: socket)
        } else if !change.snapshot, state.metrics.exportedContainers.contains(report.id) == false {
            try await refreshMetrics(client, socket: socket)
        }
    }

    private func refreshMetrics(_ client: ShimStatusClient, socket: String) async throws {
        let all = try await withTimeout(options.callTimeout) { try await client.metrics() }
        stats.withLock { $0.metricsCalls += 1 }
        var ids = Set<String>()
        for m in all {
            guard let sample = ShimReports.sample(m) else { continue }
            if state.report(m.id)?.phase == .stopping { continue }
            ids.insert(m.id)
            if !state.metrics.update(sample) {
                logger.warning(
                    "two containers with the same metric labels; keeping the first",
                    metadata: ["id": "\(m.id)", "container": "\(sample.container)", "pod": "\(sample.pod)"]
                )
            }
        }
        state.metrics.retain(containerIDs: ids, among: state.containers(ofShim: socket).union(ids))
    }
}

/// Runs `body`, failing with ``TimeoutError`` after `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError(timeout: timeout)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// A call took longer than allowed.
public struct TimeoutError: Error, CustomStringConvertible {
    /// The limit.
    public var timeout: Duration
    /// `timed out after …`.
    public var description: String { "timed out after \(timeout)" }
}
