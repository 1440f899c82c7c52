// Migration on one node (decisions 0048-0051): the controllers (create a Migration when a pod of
// this node that migrates is deleted; claim one for a pending pod of this node; remove images and
// the finalizer of this node's Migrations) and the node service (the shims' PrepareEvac, Evac,
// Restore, FinishRestore on the node socket; peer managers' PullImage over mutual TLS).
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import ZPAPI
import ZPCore
import ZPKube
import ZPTTRPC

/// Settings of migration on a node.
public struct MigrationOptions: Sendable {
    /// This node (`NODE_NAME`).
    public var nodeName: String
    /// This manager's address for peers (`POD_IP`): the image server's host and the certificate's SAN.
    public var podIP: String
    /// The node service's TCP port for peers (from `-node-server-addr`).
    public var nodeServerPort: Int
    /// How long a deleted pod's Migration waits to be claimed (`-migration-claim-timeout`, 10 s).
    public var claimTimeout: Duration = .seconds(10)
    /// How long a claimed Migration waits for the target to be ready (`-migration-ready-timeout`, 5 min).
    public var readyTimeout: Duration = .seconds(300)
    /// How long a ready target waits for the source's image server (`-migration-servers-timeout`, 10 s).
    public var serversTimeout: Duration = .seconds(10)
    /// Pods own their Migrations, so garbage collection removes them (`-auto-gc-migrations`, true).
    public var autoGC = true
    /// How long a live migration's page-server proxies stay open (`-pages-transfer-timeout`, 5 min).
    public var pagesTransferTimeout: Duration = .seconds(300)
    /// How often a broken image transfer is resumed before the migration fails.
    public var pullAttempts = 3
    /// How long the target waits for the pod or its Migration to appear in its caches.
    public var lookupTimeout: Duration = .seconds(3)

    /// Options.
    public init(nodeName: String, podIP: String, nodeServerPort: Int) {
        self.nodeName = nodeName
        self.podIP = podIP
        self.nodeServerPort = nodeServerPort
    }
}

/// Migration on this node: controllers and the node service.
public final class MigrationService: Sendable {
    let options: MigrationOptions
    let layout: NodeLayout
    let writer: MigrationWriter
    let pods: Informer<Pod>
    let migrations: Informer<Migration>
    let state: NodeState
    let tls: NodeTLS
    let group: any EventLoopGroup
    let logger: Logger
    /// Digests of the archives this node serves, by source container id.
    let served = Mutex<[String: (digest: String, size: Int64)]>([:])
    /// Folders already removed after their Migration ended.
    let cleaned = Mutex<Set<String>>([])
    /// The uids of the pods whose Migration this manager created: a Migration deleted while its
    /// source pod is still terminating is not created again (decision 0051, create once).
    let createdFor = Mutex<Set<String>>([])
    /// The restores this process serves, from the target shim's `Restore` to its `FinishRestore`
    /// ("namespace/migration/container" → the target container's id). A claimed, ready, unfinished
    /// container of this node that is not here was being restored by a previous life of this
    /// manager: it fails (decision 0048). A FinishRestore about another container than the one
    /// recorded here is refused (decision 0065).
    let restoring = Mutex<[String: String]>([:])
    /// Whether the leftovers of a previous life were swept (the archives under `<state-dir>/m`
    /// that no Migration claims, decision 0064): once, when both caches first synced.
    let swept = Mutex(false)
    /// The port the node service listens on for peers (the image server's), once bound.
    let boundPort = Mutex<Int?>(nil)
    /// Live migrations' page-server proxies by image id (the source's container id on the source,
    /// the target's on the target), closed when their migration ends (decision 0058).
    let pageProxies = Mutex<[String: (proxy: PageServerProxy, backend: PageProxyEndpoint?)]>([:])

    /// A service for this node.
    /// - Parameters:
    ///   - client: The Kubernetes client.
    ///   - state: The node's containers as the shims report them (which containers run).
    ///   - tls: The node service's TLS contexts (peers).
    public init(
        options: MigrationOptions,
        layout: NodeLayout,
        client: KubeClient,
        state: NodeState,
        tls: NodeTLS,
        group: any EventLoopGroup,
        logger: Logger
    ) {
        self.options = options
        self.layout = layout
        self.writer = MigrationWriter(client: client, logger: logger)
        var podOptions = InformerOptions()
        podOptions.fieldSelector = "spec.nodeName=\(options.nodeName)"
        self.pods = Informer(client: client, resource: .pods, options: podOptions, logger: logger)
        self.migrations = Informer(client: client, resource: Migration.resource, logger: logger)
        self.state = state
        self.tls = tls
        self.group = group
        self.logger = logger
    }

    // MARK: - running

    /// Runs the informers, the controllers and both node service listeners until cancelled.
    /// - Parameter onListening: called with the TCP address once peers can connect.
    public func run(onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in }) async throws {
        try FileManager.default.createDirectory(atPath: layout.runDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: layout.migrationRoot, withIntermediateDirectories: true)
        removePartialPulls()
        removeTargetPageSockets()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await self.pods.run() }
            tasks.addTask { await self.migrations.run() }
            tasks.addTask { await self.reconcileOnChanges(self.pods.changes()) }
            tasks.addTask {
                let changes = self.migrations.changes()
                // One pass once both caches have synced: a cache whose first list is empty reports
                // no change, so the change streams alone may never run the pass that removes a
                // previous life's archives (seen: the sweep never ran when the pods synced last).
                await self.pods.waitForSync()
                await self.migrations.waitForSync()
                await self.reconcile()
                await self.reconcileOnChanges(changes)
            }
            tasks.addTask {
                try await TTRPCServer(router: self.shimRouter(), group: self.group, logger: self.logger)
                    .run(unixSocketPath: self.layout.nodeSocket)
            }
            tasks.addTask {
                let tls = self.tls
                let logger = self.logger
                try await TTRPCServer(router: self.peerRouter(), group: self.group, logger: self.logger)
                    .run(
                        tcpHost: "0.0.0.0",
                        port: self.options.nodeServerPort,
                        prepareConnection: { try tls.prepareServer($0, logger: logger) },
                        onListening: { address in
                            self.boundPort.withLock { $0 = address.port }
                            onListening(address)
                        }
                    )
            }
            try await tasks.next()
            tasks.cancelAll()
        }
    }

    private func reconcileOnChanges<S: AsyncSequence & Sendable>(_ changes: S) async where S.Element == [ObjectKey] {
        do {
            for try await _ in changes { await reconcile() }
        } catch {
            logger.warning("migration change stream ended: \(error)")
        }
    }

    // MARK: - controllers

    /// One pass over this node's pods and Migrations: create, claim, clean up.
    func reconcile() async {
        if pods.hasSynced, migrations.hasSynced, !swept.withLock({ $0 }) {
            swept.withLock { $0 = true }
            removeUnclaimedArchives()
        }
        for pod in pods.objects {
            if pod.metadata.deletionTimestamp != nil {
                await createMigrationIfNeeded(for: pod)
            } else if pod.metadata.labels?[MigrationPlanner.podTemplateHashLabel] != nil {
                await claimIfPossible(for: pod)
            }
        }
        for migration in migrations.objects where migration.spec.sourceNode == options.nodeName {
            await failIfSourceStoppedWithoutImage(migration)
            await cleanUpIfDone(migration)
        }
        for migration in migrations.objects
        where migration.spec.targetNode == options.nodeName && migration.spec.restoreReady {
            await failOrphanedRestores(migration)
        }
    }

    /// Fails the `Pending` containers of a Migration whose source pod is gone: the container
    /// stopped without handing its image over (forced deletion, a shim without migration, a
    /// container that was never scaled down), so the Migration would otherwise stay `Pending`
    /// until it is deleted. Only with both caches synced: an empty cache is not a gone pod.
    private func failIfSourceStoppedWithoutImage(_ migration: Migration) async {
        guard pods.hasSynced, migrations.hasSynced, migration.metadata.deletionTimestamp == nil,
            let name = migration.metadata.name, let namespace = migration.metadata.namespace,
            let sourcePod = migration.spec.sourcePod
        else { return }
        let ownerUID = migration.metadata.ownerReferences?.first { $0.kind == "Pod" && $0.name == sourcePod }?.uid
        if let pod = pods.object(ObjectKey(namespace: namespace, name: sourcePod)),
            ownerUID == nil || pod.metadata.uid == ownerUID
        {
            return  // still there (a pod of the same name with another uid is another pod)
        }
        let pending = migration.spec.containers.filter {
            migration.containerStatus($0.name)?.condition.phase == .pending
        }
        guard !pending.isEmpty else { return }
        let why = "the source container stopped without handing its image over"
        for container in pending {
            do {
                try await writer.updateStatus(namespace: namespace, name: name, container: container.name) {
                    if $0.condition.phase == .pending {
                        $0.condition = MigrationCondition(phase: .failed, message: why)
                    }
                }
                logger.warning(
                    "migration failed",
                    metadata: [
                        "migration": "\(namespace)/\(name)", "container": "\(container.name)", "reason": "\(why)",
                    ]
                )
            } catch {
                logger.warning("cannot fail the Migration \(namespace)/\(name): \(error)")
            }
        }
    }

    /// The key of a container's restore in ``restoring``.
    static func restoreKey(namespace: String, migration: String, container: String) -> String {
        "\(namespace)/\(migration)/\(container)"
    }

    /// Fails the containers of a Migration this node claimed and said ready for whose restore this
    /// process has no record: the manager was restarted (or killed) during the transfer, the shim's
    /// call failed and it started its container from scratch; without this the Migration would
    /// stay `Running` and the source would keep its image until the Migration is deleted.
    private func failOrphanedRestores(_ migration: Migration) async {
        guard let name = migration.metadata.name, let namespace = migration.metadata.namespace,
            migration.metadata.deletionTimestamp == nil
        else { return }
        for container in migration.spec.containers {
            guard let status = migration.containerStatus(container.name), !status.condition.phase.isFinal else {
                continue
            }
            let key = Self.restoreKey(namespace: namespace, migration: name, container: container.name)
            guard restoring.withLock({ $0[key] }) == nil else { continue }
            let why = "the target node's manager stopped during the restore; the replacement started without the image"
            do {
                try await writer.updateStatus(namespace: namespace, name: name, container: container.name) {
                    if !$0.condition.phase.isFinal { $0.condition = MigrationCondition(phase: .failed, message: why) }
                }
                logger.warning(
                    "migration failed",
                    metadata: [
                        "migration": "\(namespace)/\(name)", "container": "\(container.name)", "reason": "\(why)",
                    ]
                )
            } catch {
                logger.warning("cannot fail the orphaned restore of \(namespace)/\(name): \(error)")
            }
        }
    }

    /// Removes what a previous life of this manager left of an unfinished pull (`*.partial`, and
    /// its folder when nothing else is in it).
    func removePartialPulls() {
        let root = layout.migrationRoot
        for folder in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            let directory = root + "/" + folder
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            where entry.hasSuffix(".partial") {
                try? FileManager.default.removeItem(atPath: directory + "/" + entry)
                logger.info("removed an unfinished image pull", metadata: ["path": "\(directory)/\(entry)"])
            }
            if (try? FileManager.default.contentsOfDirectory(atPath: directory))?.isEmpty == true {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }

    /// Removes every target-side page socket (`<run-dir>/t`, decision 0064): only this manager
    /// listens there, so at its start each one was left by a previous life that died between
    /// binding it and the end of its restore. The source side's sockets (`<run-dir>/p`) are the
    /// shims' and stay: probing one would use up a live source's one-shot relay (decision 0063).
    func removeTargetPageSockets() {
        let folder = layout.targetPageSocketDirectory
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            try? FileManager.default.removeItem(atPath: folder + "/" + entry)
            logger.info("removed a page socket of a previous life", metadata: ["path": "\(folder)/\(entry)"])
        }
    }

    /// Removes the migration folders (`<state-dir>/m/<id>`) that nothing claims (decision 0064):
    /// neither a source container of an unfinished Migration of this node (its image, served to
    /// the target, or about to be written by its shim) nor a restore this process serves (its
    /// pull). What is left is a previous life's: the archive a target pulled before its manager
    /// died (its Migration failed by ``failOrphanedRestores(_:)``), an image whose Migration went
    /// away while this manager was down. Runs once, when both caches first synced.
    func removeUnclaimedArchives() {
        let claimed = Set(
            migrations.objects.filter {
                $0.spec.sourceNode == options.nodeName && !$0.isFinished && $0.metadata.deletionTimestamp == nil
            }.flatMap { $0.spec.containers.map(\.id) }
        ).union(restoring.withLock { Set($0.values) })
        let root = layout.migrationRoot
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        for folder in folders where !claimed.contains(folder) {
            try? FileManager.default.removeItem(atPath: root + "/" + folder)
            logger.info("removed a migration image no Migration claims", metadata: ["path": "\(root)/\(folder)"])
        }
    }

    /// The containerd ids of `pod`'s containers: from the shims' reports, else the pod's status.
    func containerIDs(of pod: Pod) -> [String: String] {
        var ids: [String: String] = [:]
        for status in pod.status?.containerStatuses ?? [] {
            if let id = status.containerID?.split(separator: "/").last { ids[status.name] = String(id) }
        }
        for (id, report) in state.reports
        where report.pod?.name == pod.metadata.name && report.pod?.namespace == pod.metadata.namespace {
            if report.phase != .stopping { ids[report.name] = id }
        }
        return ids
    }

    private func createMigrationIfNeeded(for pod: Pod) async {
        let key = ObjectKey(pod.metadata)
        if migrations.object(key) != nil { return }
        if let uid = pod.metadata.uid, createdFor.withLock({ $0.contains(uid) }) { return }
        let ids = containerIDs(of: pod)
        guard
            let migration = MigrationPlanner.migration(
                for: pod,
                node: options.nodeName,
                containerIDs: ids,
                autoGC: options.autoGC
            )
        else { return }
        do {
            guard let created = try await writer.create(migration) else {
                logger.warning("a Migration \(key) of another pod exists; this pod does not migrate")
                return
            }
            if let uid = pod.metadata.uid { createdFor.withLock { _ = $0.insert(uid) } }
            if created.status != nil {  // this pod's own, made before a restart: nothing to add
                logger.info("migration already exists", metadata: ["migration": "\(key)"])
                return
            }
            let running = Set(ids.compactMap { name, id in state.report(id)?.phase == .running ? name : nil })
            let status = MigrationPlanner.initialStatus(created, pod: pod, running: running)
            try await writer.modify(namespace: key.namespace, name: key.name, subresource: "status", start: created) {
                current in
                current.status == nil ? ["status": MigrationWriter.json(status)] : nil
            }
            logger.info(
                "migration created",
                metadata: [
                    "migration": "\(key)",
                    "containers": "\(status.containers.map { "\($0.name)=\($0.condition.phase.rawValue)" })",
                ]
            )
        } catch {
            logger.warning("cannot create the Migration \(key): \(error)")
        }
    }

    private func claimIfPossible(for pod: Pod) async {
        let namespace = pod.metadata.namespace ?? ""
        guard
            let candidate = migrations.objects.filter({
                MigrationPlanner.canClaim($0, pod: pod, node: options.nodeName)
            })
            .min(by: {
                ($0.metadata.creationTimestamp ?? "", $0.metadata.name ?? "") < (
                    $1.metadata.creationTimestamp ?? "", $1.metadata.name ?? ""
                )
            })
        else { return }
        _ = await claim(candidate, pod: pod, namespace: namespace)
    }

    /// Claims `migration` for `pod` (re-checked on the server's current object after a conflict).
    func claim(_ migration: Migration, pod: Pod, namespace: String) async -> Migration? {
        let name = migration.metadata.name ?? ""
        do {
            let claimed = try await writer.modify(namespace: namespace, name: name, start: migration) { current in
                guard MigrationPlanner.canClaim(current, pod: pod, node: self.options.nodeName) else { return nil }
                return MigrationPlanner.claimPatch(
                    current,
                    pod: pod,
                    node: self.options.nodeName,
                    autoGC: self.options.autoGC
                )
            }
            if let claimed, claimed.spec.targetPod == pod.metadata.name, claimed.spec.targetNode == options.nodeName {
                logger.info(
                    "migration claimed",
                    metadata: ["migration": "\(namespace)/\(name)", "pod": "\(pod.metadata.name ?? "")"]
                )
                return claimed
            }
        } catch {
            logger.warning("cannot claim the Migration \(namespace)/\(name): \(error)")
        }
        return nil
    }

    private func cleanUpIfDone(_ migration: Migration) async {
        let key = ObjectKey(migration.metadata)
        if migration.isFinished || migration.metadata.deletionTimestamp != nil {
            for container in migration.spec.containers {
                closePageProxy(imageID: container.id)
                let directory = layout.migrationDirectory(containerID: container.id)
                let first = cleaned.withLock { $0.insert(directory).inserted }
                if first || FileManager.default.fileExists(atPath: directory) {
                    try? FileManager.default.removeItem(atPath: directory)
                    served.withLock { _ = $0.removeValue(forKey: container.id) }
                    if first {
                        logger.info(
                            "migration image removed",
                            metadata: ["migration": "\(key)", "image": "\(directory)"]
                        )
                    }
                }
            }
        }
        guard migration.metadata.deletionTimestamp != nil,
            migration.metadata.finalizers?.contains(Migration.cleanupFinalizer) == true
        else { return }
        do {
            try await writer.modify(namespace: key.namespace, name: key.name, start: migration) { current in
                let finalizers = current.metadata.finalizers ?? []
                guard finalizers.contains(Migration.cleanupFinalizer) else { return nil }
                return [
                    "metadata": [
                        "finalizers": .array(finalizers.filter { $0 != Migration.cleanupFinalizer }.map(JSON.string))
                    ]
                ]
            }
        } catch {
            logger.warning("cannot remove the finalizer of \(key): \(error)")
        }
    }

    // MARK: - waiting on the caches

    /// Polls `condition` on the caches every 20 ms until it returns a value or `timeout` passes.
    func poll<T>(_ timeout: Duration, _ condition: () -> T?) async -> T? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let value = condition() { return value }
            if ContinuousClock.now >= deadline || Task.isCancelled { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
