import Logging
import NIOCore
import Synchronization
import ZPAPI
import ZPCore
import ZPSystem

/// One container's membership in a wake group (docs/decisions/0011-wake-groups.md): its entry in
/// the node's ``WakeGroupRegistry`` and the sending side of group wakes.
///
/// When the container starts coming back because of a connection or an exec, its driver calls
/// ``requestWake()``; ``run()`` (a child task of the driver's `ScaleDownDriver.run()`) then calls
/// `Wake` on every other member's shim, all in parallel, without the driver waiting for them. A
/// member whose socket does not answer (a stale entry of a shim that died) is logged and skipped.
final class WakeGroupMember: Sendable {
    /// How long one `Wake` call may take: the peer answers once its restore finished.
    static let callTimeout: Duration = .seconds(30)

    private enum Membership {
        case notJoined, joined, left
    }

    /// The group.
    let key: WakeGroupKey
    /// This member's entry: the container id and its shim's status socket.
    let entry: WakeGroupEntry
    /// Where the group's members are listed.
    let registry: WakeGroupRegistry
    private let group: any EventLoopGroup
    private let logger: Logger
    private let membership = Mutex(Membership.notJoined)
    private let requests: AsyncStream<Void>
    private let requestInput: AsyncStream<Void>.Continuation

    /// A member that is not listed yet (``run()`` lists it).
    /// - Parameters:
    ///   - key: The group.
    ///   - entry: The container and the status socket of this shim.
    ///   - registry: The node's registry.
    ///   - group: Event loops for the calls to other shims.
    ///   - logger: Joins, wakes and unreachable members are logged here.
    init(
        key: WakeGroupKey,
        entry: WakeGroupEntry,
        registry: WakeGroupRegistry,
        group: any EventLoopGroup,
        logger: Logger
    ) {
        self.key = key
        self.entry = entry
        self.registry = registry
        self.group = group
        var logger = logger
        logger[metadataKey: "wake-group"] = "\(key)"
        self.logger = logger
        // Requests that arrive while one is queued add nothing: the queued one wakes the same peers.
        (requests, requestInput) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The membership of a container whose annotations name a wake group; nil when they name none.
    /// - Parameters:
    ///   - config: The container's parsed annotations (`wakeGroup`, `podNamespace`).
    ///   - containerID: The containerd container id.
    ///   - containerdNamespace: The containerd namespace of the container.
    ///   - statusSocket: This shim's status socket, which serves `Wake`.
    convenience init?(
        config: ContainerConfig,
        containerID: String,
        containerdNamespace: String,
        statusSocket: String,
        registry: WakeGroupRegistry,
        group: any EventLoopGroup,
        logger: Logger
    ) {
        guard let name = config.wakeGroup else { return nil }
        self.init(
            key: WakeGroupKey(containerdNamespace: containerdNamespace, podNamespace: config.podNamespace, group: name),
            entry: WakeGroupEntry(containerID: containerID, statusSocket: statusSocket),
            registry: registry,
            group: group,
            logger: logger
        )
    }

    /// Asks ``run()`` to wake the other members now. Returns at once.
    func requestWake() {
        requestInput.yield()
    }

    /// Removes the entry and ends ``run()`` (Delete). A later ``run()`` does not list it again.
    func leave() {
        let wasJoined = membership.withLock { m -> Bool in
            defer { m = .left }
            return m == .joined
        }
        if wasJoined { registry.unregister(containerID: entry.containerID, in: key) }
        requestInput.finish()
    }

    /// Lists this member, then carries out wake requests until ``leave()`` or cancellation.
    /// Each request's calls run in parallel; requests do not wait for each other.
    func run() async {
        let joined = membership.withLock { m -> Bool in
            guard m == .notJoined else { return false }
            do {
                try registry.register(entry, in: key)
            } catch {
                logger.warning("not listed in the wake group: \(error)")
                return false
            }
            m = .joined
            return true
        }
        guard joined else { return }
        logger.info("joined wake group", metadata: ["entry": "\(registry.directory(of: key))/\(entry.containerID)"])
        await withDiscardingTaskGroup { tasks in
            for await _ in requests {
                tasks.addTask { await self.wakePeers() }
            }
        }
    }

    /// Calls `Wake` on every other listed member, in parallel; returns when all answered or failed.
    func wakePeers() async {
        let peers = registry.members(of: key).filter { $0.containerID != entry.containerID }
        guard !peers.isEmpty else { return }
        logger.info("waking wake group", metadata: ["peers": "\(peers.map(\.containerID))"])
        await withDiscardingTaskGroup { tasks in
            for peer in peers {
                tasks.addTask { await self.wake(peer) }
            }
        }
    }

    private func wake(_ peer: WakeGroupEntry) async {
        let start = ContinuousClock.now
        let metadata: Logger.Metadata = ["peer": "\(peer.containerID)"]
        let client: ShimStatusClient
        do {
            client = try await ShimStatusClient.connect(socketPath: peer.statusSocket, group: group)
        } catch {
            logger.warning("wake group member unreachable, skipped: \(peer.statusSocket): \(error)", metadata: metadata)
            return
        }
        do {
            let response = try await client.wake(
                id: peer.containerID,
                origin: "\(key.group)/\(entry.containerID)",
                timeout: Self.callTimeout
            )
            logger.info(
                "wake group member answered \(response.outcome)",
                metadata: metadata.merging([
                    "phase": "\(response.lifecyclePhase.map { "\($0)" } ?? "?")",
                    "waited": "\(ZPSystem.milliseconds(response.waited)) ms",
                    "total": "\(ZPSystem.milliseconds(ContinuousClock.now - start)) ms",
                ]) { $1 }
            )
        } catch {
            logger.warning("wake of group member failed: \(error)", metadata: metadata)
        }
        await client.close()
    }
}
