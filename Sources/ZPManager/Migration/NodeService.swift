// The node service's methods (decision 0048). The shims' four methods are served on the node
// socket only, PullImage on the mutual-TLS port only: a peer cannot claim or finish a migration,
// and a local process cannot pull another node's image through this node (the original served
// every method on both).
import Crypto
import Foundation
import Logging
import NIOCore
import SystemPackage
import ZPAPI
import ZPCore
import ZPKube
import ZPSystem
import ZPTTRPC

#if canImport(Glibc)
import Glibc
#endif

extension MigrationService {
    /// The methods for the node's shims (node socket).
    func shimRouter() -> TTRPCRouter {
        var router = TTRPCRouter()
        router.register(service: NodeAPI.service, method: NodeAPI.Method.prepareEvac.rawValue) { call in
            try await self.prepareEvac(NodeAPI.EvacRequest(decoding: call.payload)).encoded()
        }
        router.register(service: NodeAPI.service, method: NodeAPI.Method.evac.rawValue) { call in
            try await self.evac(NodeAPI.EvacRequest(decoding: call.payload)).encoded()
        }
        router.register(service: NodeAPI.service, method: NodeAPI.Method.restore.rawValue) { call in
            try await self.restore(NodeAPI.RestoreRequest(decoding: call.payload)).encoded()
        }
        router.register(service: NodeAPI.service, method: NodeAPI.Method.finishRestore.rawValue) { call in
            try await self.finishRestore(NodeAPI.RestoreRequest(decoding: call.payload)).encoded()
        }
        router.register(service: NodeAPI.service, method: NodeAPI.Method.abortEvac.rawValue) { call in
            try await self.abortEvac(NodeAPI.EvacRequest(decoding: call.payload)).encoded()
        }
        return router
    }

    /// The methods for peer managers (mutual TLS).
    func peerRouter() -> TTRPCRouter {
        var router = TTRPCRouter()
        router.registerServerStream(service: NodeAPI.service, method: NodeAPI.Method.pullImage.rawValue) {
            call,
            writer in
            try await self.serveImage(NodeAPI.PullImageRequest(decoding: call.payload), writer)
        }
        return router
    }

    static func parts(
        _ podInfo: NodeAPI.PodInfo?,
        _ info: NodeAPI.MigrationInfo?
    ) throws -> (NodeAPI.PodInfo, NodeAPI.MigrationInfo) {
        guard let podInfo, !podInfo.name.isEmpty, !podInfo.namespace.isEmpty, !podInfo.containerName.isEmpty else {
            throw TTRPCStatusError(.invalidArgument, "pod_info needs the pod's name, namespace and container_name")
        }
        guard let info, isContainerID(info.imageID) else {
            throw TTRPCStatusError(.invalidArgument, "migration_info.image_id must be a container id (64 hex digits)")
        }
        return (podInfo, info)
    }

    static func isContainerID(_ id: String) -> Bool {
        id.utf8.count == 64
            && id.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) }
    }

    // MARK: - source

    /// PrepareEvac: is this container's pod being deleted with a Migration, and did a ready
    /// target claim it?
    func prepareEvac(_ request: NodeAPI.EvacRequest) async throws -> NodeAPI.EvacResponse {
        let (podInfo, _) = try Self.parts(request.podInfo, request.migrationInfo)
        let key = ObjectKey(namespace: podInfo.namespace, name: podInfo.name)
        let container = podInfo.containerName
        guard let pod = pods.object(key), pod.metadata.deletionTimestamp != nil else {
            return NodeAPI.EvacResponse(outcome: .noMigration, reason: "pod \(key) is not being deleted")
        }
        guard MigrationPlanner.migratingContainers(of: pod).contains(where: { $0.name == container }) else {
            return NodeAPI.EvacResponse(
                outcome: .noMigration,
                reason: "container \(container) of \(key) does not migrate"
            )
        }
        enum Seen {
            case claimed(Migration)
            case failed(String)
        }
        let seen: Seen? = await poll(options.claimTimeout) {
            guard let m = migrations.object(key), m.spec.sourceNode == options.nodeName,
                m.spec.sourcePod == pod.metadata.name
            else { return nil }
            if let status = m.containerStatus(container), status.condition.phase.isFinal {
                return .failed("\(status.condition.phase.rawValue): \(status.condition.message ?? "")")
            }
            return m.isClaimed ? .claimed(m) : nil
        }
        switch seen {
        case .failed(let why)?:
            return NodeAPI.EvacResponse(outcome: .failed, reason: "Migration \(key) \(why)")
        case nil:
            guard migrations.object(key) != nil else {
                return NodeAPI.EvacResponse(outcome: .noMigration, reason: "no Migration \(key) appeared")
            }
            _ = try? await writer.updateStatus(namespace: key.namespace, name: key.name, container: container) {
                if !$0.condition.phase.isFinal {
                    $0.condition = MigrationCondition(
                        phase: .unclaimed,
                        message: "no replacement pod claimed it within \(self.options.claimTimeout)"
                    )
                }
            }
            logger.info("migration unclaimed", metadata: ["migration": "\(key)", "container": "\(container)"])
            return NodeAPI.EvacResponse(
                outcome: .unclaimed,
                reason: "Migration \(key) was not claimed within \(options.claimTimeout)"
            )
        case .claimed?:
            break
        }
        let ready: Bool? = await poll(options.readyTimeout) {
            guard let m = migrations.object(key) else { return false }
            if let status = m.containerStatus(container), status.condition.phase.isFinal { return false }
            return m.spec.restoreReady ? true : nil
        }
        guard ready == true else {
            let reason =
                ready == nil
                ? "the target was not ready within \(options.readyTimeout)" : "the Migration ended or went away"
            _ = try? await writer.updateStatus(namespace: key.namespace, name: key.name, container: container) {
                if !$0.condition.phase.isFinal { $0.condition = MigrationCondition(phase: .failed, message: reason) }
            }
            return NodeAPI.EvacResponse(outcome: .failed, reason: "Migration \(key): \(reason)")
        }
        return NodeAPI.EvacResponse(
            outcome: .claimed,
            reason: "Migration \(key) claimed by \(migrations.object(key)?.spec.targetPod ?? "?")"
        )
    }

    /// Evac: the shim wrote the archive; publish it and mark the container Running.
    func evac(_ request: NodeAPI.EvacRequest) async throws -> NodeAPI.EvacResponse {
        let (podInfo, info) = try Self.parts(request.podInfo, request.migrationInfo)
        let key = ObjectKey(namespace: podInfo.namespace, name: podInfo.name)
        let archive = layout.migrationArchive(containerID: info.imageID)
        let (digest, size): (String, Int64)
        do {
            (digest, size) = try Self.digest(ofFile: archive)
        } catch {
            throw TTRPCStatusError(.failedPrecondition, "the image \(archive) cannot be read: \(error)")
        }
        served.withLock { $0[info.imageID] = (digest, size) }
        let server = MigrationServer(
            host: options.podIP,
            port: Int32(boundPort.withLock { $0 } ?? options.nodeServerPort)
        )
        let ports = podInfo.ports.isEmpty ? info.ports : podInfo.ports
        // A live migration: CRIU's page server listens on the host's loopback, which is not this
        // manager's (it runs in its pod's network namespace); the shim relays it to the
        // container's page socket in the run folder, and peers reach that through a one-shot
        // mutual-TLS proxy (decisions 0058, 0063).
        var pageServer: MigrationServer?
        if info.liveMigration {
            let socket = layout.pageSocket(containerID: info.imageID)
            guard FileManager.default.fileExists(atPath: socket) else {
                throw TTRPCStatusError(
                    .failedPrecondition,
                    "a live Evac needs the shim listening on its page socket \(socket), and nothing is there"
                )
            }
            closePageProxy(imageID: info.imageID)
            let proxy = try await PageServerProxy.start(
                group: group,
                listen: .tcp(host: "0.0.0.0", port: 0),
                serverTLS: tls,
                backend: .init(endpoint: .unix(path: socket), tls: nil),
                timeout: options.pagesTransferTimeout,
                logger: logger
            )
            keepPageProxy(proxy, imageID: info.imageID, releasing: .unix(path: socket))
            pageServer = MigrationServer(host: options.podIP, port: Int32(proxy.port))
        }
        let updated: Migration?
        do {
            updated = try await writer.modify(namespace: key.namespace, name: key.name) { m in
                guard m.spec.sourceNode == self.options.nodeName else { return nil }
                var containers = m.spec.containers
                guard let i = containers.firstIndex(where: { $0.name == podInfo.containerName }) else { return nil }
                containers[i].imageServer = server
                containers[i].imageDigest = digest
                containers[i].imageSize = size
                containers[i].pageServer = pageServer
                if !ports.isEmpty { containers[i].ports = ports }
                guard containers != m.spec.containers else { return nil }
                if info.liveMigration && m.spec.liveMigration != true {
                    return ["spec": ["containers": MigrationWriter.json(containers), "liveMigration": true]]
                }
                return ["spec": ["containers": MigrationWriter.json(containers)]]
            }
        } catch {
            closePageProxy(imageID: info.imageID)
            throw error
        }
        guard let updated,
            updated.spec.containers.contains(where: { $0.name == podInfo.containerName && $0.imageDigest == digest })
        else {
            closePageProxy(imageID: info.imageID)
            throw TTRPCStatusError(
                .notFound,
                "no Migration \(key) of this node names container \(podInfo.containerName)"
            )
        }
        let pausedAt = info.pausedAt.map(MigrationPlanner.microTime)
        try await writer.updateStatus(namespace: key.namespace, name: key.name, container: podInfo.containerName) {
            if !$0.condition.phase.isFinal { $0.condition = MigrationCondition(phase: .running) }
            if let pausedAt { $0.pausedAt = pausedAt }
        }
        logger.info(
            "migration image published",
            metadata: ["migration": "\(key)", "digest": "\(digest)", "bytes": "\(size)"]
        )
        return NodeAPI.EvacResponse(outcome: .claimed, reason: digest, migrationUID: updated.metadata.uid ?? "")
    }

    /// AbortEvac (decision 0064): the source shim's live dump ended without the target taking the
    /// pages (its `pages-transfer-timeout`, or CRIU failed). Marks the container Failed with the
    /// shim's reason and closes its page-server proxy at once (a target that dials it later is
    /// refused at once instead of reaching a page server that is gone). Strict (decision 0065):
    /// refused unless the report names this Migration's uid, this node is its source, the
    /// container's published image is this container's and its phase is not final yet.
    func abortEvac(_ request: NodeAPI.EvacRequest) async throws -> NodeAPI.EvacResponse {
        let (podInfo, info) = try Self.parts(request.podInfo, request.migrationInfo)
        guard !info.migrationUID.isEmpty else {
            throw TTRPCStatusError(.invalidArgument, "AbortEvac needs migration_info.migration_uid (Evac's answer)")
        }
        guard !info.failure.isEmpty else {
            throw TTRPCStatusError(.invalidArgument, "AbortEvac needs migration_info.failure (why the dump ended)")
        }
        let key = ObjectKey(namespace: podInfo.namespace, name: podInfo.name)
        let container = podInfo.containerName
        let why = "the source ended its live dump without the target: \(info.failure)"
        enum Verdict {
            case fail
            case refuse(String)
        }
        var verdict = Verdict.refuse("no Migration \(key)")
        let updated = try await writer.modify(namespace: key.namespace, name: key.name, subresource: "status") { m in
            guard m.metadata.uid == info.migrationUID else {
                verdict = .refuse(
                    "the report is about Migration uid \(info.migrationUID), \(key) is now uid \(m.metadata.uid ?? "-")"
                )
                return nil
            }
            guard m.spec.sourceNode == self.options.nodeName,
                let published = m.spec.containers.first(where: { $0.name == container }),
                published.id == info.imageID, published.pageServer != nil
            else {
                verdict = .refuse("\(key) has no live image of container \(info.imageID) published by this node")
                return nil
            }
            let phase = m.containerStatus(container)?.condition.phase
            guard let phase, !phase.isFinal else {
                verdict = .refuse("container \(container) of \(key) is already \(phase?.rawValue ?? "without status")")
                return nil
            }
            verdict = .fail
            let status = MigrationPlanner.status(m.status, setting: container) {
                $0.condition = MigrationCondition(phase: .failed, message: why)
            }
            return ["status": MigrationWriter.json(status)]
        }
        guard case .fail = verdict, updated != nil else {
            if case .refuse(let reason) = verdict {
                logger.warning(
                    "refused a stale AbortEvac",
                    metadata: ["migration": "\(key)", "container": "\(container)", "reason": "\(reason)"]
                )
                throw TTRPCStatusError(.failedPrecondition, "AbortEvac refused: \(reason)")
            }
            throw TTRPCStatusError(.notFound, "no Migration \(key)")
        }
        closePageProxy(imageID: info.imageID)
        logger.warning(
            "migration failed",
            metadata: ["migration": "\(key)", "container": "\(container)", "reason": "\(why)"]
        )
        return NodeAPI.EvacResponse(outcome: .failed, reason: why, migrationUID: info.migrationUID)
    }

    /// `sha256:<hex>` and the size of a file, read in 1 MiB blocks.
    static func digest(ofFile path: String) throws -> (String, Int64) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileNoSuchFile) }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while let block = try handle.read(upToCount: 1 << 20), !block.isEmpty {
            hasher.update(data: block)
            size += Int64(block.count)
        }
        return ("sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined(), size)
    }

    /// PullImage (peers): the archive's bytes from `offset`, at most `length`.
    func serveImage(_ request: NodeAPI.PullImageRequest, _ writer: TTRPCStreamWriter) async throws {
        guard Self.isContainerID(request.imageID) else {
            throw TTRPCStatusError(.invalidArgument, "image_id must be a container id (64 hex digits)")
        }
        let archive = layout.migrationArchive(containerID: request.imageID)
        guard FileManager.default.fileExists(atPath: archive) else {
            throw TTRPCStatusError(.notFound, "no image \(request.imageID) on node \(options.nodeName)")
        }
        var known = served.withLock { $0[request.imageID] }
        if known == nil {  // after a restart: the file is the truth
            known = try Self.digest(ofFile: archive)
            served.withLock { $0[request.imageID] = known }
        }
        guard let (digest, size) = known else { return }
        guard request.digest.isEmpty || request.digest == digest else {
            throw TTRPCStatusError(
                .failedPrecondition,
                "image \(request.imageID) has digest \(digest), not \(request.digest)"
            )
        }
        guard request.offset >= 0, request.offset <= size else {
            throw TTRPCStatusError(.outOfRange, "offset \(request.offset) is outside the image (\(size) bytes)")
        }
        guard let handle = FileHandle(forReadingAtPath: archive) else {
            throw TTRPCStatusError(.notFound, "image \(request.imageID) went away")
        }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(request.offset))
        var remaining = request.length > 0 ? min(request.length, size - request.offset) : size - request.offset
        while remaining > 0 {
            guard let block = try handle.read(upToCount: Int(min(Int64(NodeAPI.imageChunkSize), remaining))),
                !block.isEmpty
            else { break }
            try await writer.send(NodeAPI.Image(imageData: Array(block)).encoded())
            remaining -= Int64(block.count)
        }
    }

    // MARK: - target

    /// Restore: find or claim the pod's Migration, say ready, wait for the image server, pull and
    /// check the image.
    func restore(_ request: NodeAPI.RestoreRequest) async throws -> NodeAPI.RestoreResponse {
        let (podInfo, info) = try Self.parts(request.podInfo, request.migrationInfo)
        let podKey = ObjectKey(namespace: podInfo.namespace, name: podInfo.name)
        let container = podInfo.containerName
        guard let pod = await poll(options.lookupTimeout, { pods.object(podKey) }) else {
            throw TTRPCStatusError(.notFound, "pod \(podKey) is not known on node \(options.nodeName)")
        }
        // The Migration claimed for this pod, or one it can claim now.
        var migration = await poll(options.lookupTimeout) { () -> Migration? in
            migrations.objects.first {
                $0.metadata.namespace == podInfo.namespace && $0.spec.targetPod == podInfo.name
                    && $0.spec.targetNode == options.nodeName
                    && $0.spec.containers.contains { $0.name == container } && !$0.isFinished
            }
        }
        if migration == nil {
            for candidate in migrations.objects
            where MigrationPlanner.canClaim(candidate, pod: pod, node: options.nodeName)
                && candidate.spec.containers.contains(where: { $0.name == container })
            {
                if let claimed = await claim(candidate, pod: pod, namespace: podInfo.namespace) {
                    migration = claimed
                    break
                }
            }
        }
        guard let found = migration, let name = found.metadata.name else {
            throw TTRPCStatusError(.notFound, "no Migration for container \(container) of pod \(podKey)")
        }
        let key = ObjectKey(namespace: podInfo.namespace, name: name)
        let restoreKey = Self.restoreKey(namespace: podInfo.namespace, migration: name, container: container)
        restoring.withLock { $0[restoreKey] = info.imageID }
        try await writer.modify(namespace: key.namespace, name: name) { m in
            m.spec.restoreReady ? nil : ["spec": ["restoreReady": true]]
        }
        let published: MigrationContainer? = await poll(options.serversTimeout) {
            guard let m = migrations.object(key) else { return nil }
            if let s = m.containerStatus(container), s.condition.phase.isFinal { return nil }
            return m.spec.containers.first { $0.name == container && $0.imageServer != nil && $0.imageDigest != nil }
        }
        guard let source = published, let server = source.imageServer, let digest = source.imageDigest else {
            let why =
                migrations.object(key)?.containerStatus(container).map { $0.condition.phase.isFinal } == true
                ? "the migration ended on the source (\(migrations.object(key)?.containerStatus(container)?.condition.message ?? ""))"
                : "the source published no image within \(options.serversTimeout)"
            try? await fail(key, container, why)
            restoring.withLock { _ = $0.removeValue(forKey: restoreKey) }  // final now, or left to the orphan rule
            throw TTRPCStatusError(.deadlineExceeded, "Migration \(key): \(why)")
        }
        let archive = layout.migrationArchive(containerID: info.imageID)
        let start = ContinuousClock.now
        do {
            try await pull(imageID: source.id, digest: digest, size: source.imageSize, from: server, into: archive)
        } catch {
            try? FileManager.default.removeItem(atPath: layout.migrationDirectory(containerID: info.imageID))
            let why = "pulling the image from \(server.host):\(server.port) failed: \(error)"
            try? await fail(key, container, why)
            restoring.withLock { _ = $0.removeValue(forKey: restoreKey) }  // final now, or left to the orphan rule
            throw TTRPCStatusError(.unavailable, "Migration \(key): \(why)")
        }
        logger.info(
            "migration image pulled",
            metadata: [
                "migration": "\(key)", "digest": "\(digest)", "bytes": "\(source.imageSize ?? 0)",
                "duration": "\(milliseconds(ContinuousClock.now - start)) ms",
            ]
        )
        var answer = NodeAPI.MigrationInfo()
        answer.imageID = info.imageID
        answer.liveMigration = false
        answer.migrationUID = found.metadata.uid ?? ""
        answer.ports = source.ports ?? []
        if let pageServer = source.pageServer {
            // Live: the shim's `criu lazy-pages` gets the pages through its loopback relay (in
            // the host's network namespace) to the new container's page socket, where this proxy
            // to the source's mutual-TLS page-server proxy listens (decisions 0058, 0063), in
            // the target side's folder, which a restarted manager empties (decision 0064).
            do {
                closePageProxy(imageID: info.imageID)
                try Files.makeOwnerOnlyDirectory(FilePath(layout.targetPageSocketDirectory))
                let proxy = try await PageServerProxy.start(
                    group: group,
                    listen: .unix(path: layout.targetPageSocket(containerID: info.imageID)),
                    serverTLS: nil,
                    backend: .init(endpoint: .tcp(host: pageServer.host, port: Int(pageServer.port)), tls: tls),
                    timeout: options.pagesTransferTimeout,
                    logger: logger
                )
                keepPageProxy(proxy, imageID: info.imageID)
                answer.liveMigration = true
            } catch {
                try? FileManager.default.removeItem(atPath: layout.migrationDirectory(containerID: info.imageID))
                let why = "cannot open the page-server proxy to \(pageServer.host):\(pageServer.port): \(error)"
                try? await fail(key, container, why)
                restoring.withLock { _ = $0.removeValue(forKey: restoreKey) }
                throw TTRPCStatusError(.unavailable, "Migration \(key): \(why)")
            }
        }
        return NodeAPI.RestoreResponse(migrationInfo: answer)
    }

    /// Keeps a live migration's page-server proxy until it ends or its migration does; a source
    /// proxy (`releasing`: the shim's page socket, relayed to CRIU's page server) releases CRIU's
    /// wait when it is closed unused.
    func keepPageProxy(_ proxy: PageServerProxy, imageID: String, releasing: PageProxyEndpoint? = nil) {
        pageProxies.withLock { $0[imageID] = (proxy, releasing) }
        proxy.finished.whenComplete { [weak self] _ in
            self?.pageProxies.withLock { proxies in
                if proxies[imageID]?.proxy === proxy { proxies[imageID] = nil }
            }
        }
    }

    /// Closes the page-server proxy of `imageID`, if any (a source proxy that never had its
    /// client releases CRIU's page server).
    func closePageProxy(imageID: String) {
        guard let (proxy, backend) = pageProxies.withLock({ $0.removeValue(forKey: imageID) }) else { return }
        proxy.close(releasingBackend: backend)
    }

    private func fail(_ key: ObjectKey, _ container: String, _ why: String) async throws {
        try await writer.updateStatus(namespace: key.namespace, name: key.name, container: container) {
            if !$0.condition.phase.isFinal { $0.condition = MigrationCondition(phase: .failed, message: why) }
        }
        logger.warning(
            "migration failed",
            metadata: ["migration": "\(key)", "container": "\(container)", "reason": "\(why)"]
        )
    }

    /// Pulls an archive in windows over mutual TLS, resuming after a broken connection, and checks
    /// its digest; the file appears under `path` only when complete and correct.
    func pull(
        imageID: String,
        digest: String,
        size: Int64?,
        from server: MigrationServer,
        into path: String
    ) async throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let partial = path + ".partial"
        FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600])
        guard let out = FileHandle(forWritingAtPath: partial) else {
            throw TTRPCStatusError(.internalError, "cannot write \(partial)")
        }
        defer { try? out.close() }
        var offset: Int64 = 0
        var failures = 0
        var lastError: (any Error)?
        while true {
            do {
                let client = try await NodeTLS.connect(
                    host: server.host,
                    port: Int(server.port),
                    tls: tls,
                    group: group
                )
                do {
                    while true {
                        var received: Int64 = 0
                        for try await chunk in client.pullImage(
                            NodeAPI.PullImageRequest(
                                imageID: imageID,
                                offset: offset,
                                length: NodeAPI.imageWindowSize,
                                digest: digest
                            )
                        ) {
                            try out.write(contentsOf: chunk)
                            received += Int64(chunk.count)
                            offset += Int64(chunk.count)
                        }
                        if received == 0 { break }  // past the end
                        if let size, offset >= size { break }
                    }
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
                break
            } catch let error as TTRPCStatusError
                where error.code == .failedPrecondition || error.code == .notFound || error.code == .invalidArgument
            {
                throw error  // the source refuses: no point in resuming
            } catch {
                failures += 1
                lastError = error
                guard failures < options.pullAttempts else {
                    throw TTRPCStatusError(
                        .unavailable,
                        "gave up after \(failures) attempts at byte \(offset): \(lastError.map { "\($0)" } ?? "")"
                    )
                }
                logger.info("image transfer broke; resuming", metadata: ["offset": "\(offset)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200 * failures))
            }
        }
        try out.synchronize()
        let (actual, bytes) = try Self.digest(ofFile: partial)
        guard actual == digest else {
            try? FileManager.default.removeItem(atPath: partial)
            throw TTRPCStatusError(
                .dataLoss,
                "the image has digest \(actual) (\(bytes) bytes), the Migration says \(digest)"
            )
        }
        try FileManager.default.moveItem(atPath: partial, toPath: path)
    }

    /// FinishRestore: the target created the container from the image (or from scratch).
    ///
    /// Strict (decision 0065): the report moves the container to Completed or Failed only when it
    /// is about the current attempt: the Migration's uid is the one Restore answered, this
    /// process serves a restore of exactly this target container (a manager restarted since has
    /// none: ``failOrphanedRestores(_:)`` already failed it), and the phase is not final yet (a
    /// Completed container is never turned Failed by a late report, nor a Failed one Completed).
    /// Anything else is refused with `failedPrecondition` and changes nothing.
    func finishRestore(_ request: NodeAPI.RestoreRequest) async throws -> NodeAPI.RestoreResponse {
        let (podInfo, info) = try Self.parts(request.podInfo, request.migrationInfo)
        guard !info.migrationUID.isEmpty else {
            throw TTRPCStatusError(
                .invalidArgument,
                "FinishRestore needs migration_info.migration_uid (the Restore answer's)"
            )
        }
        guard
            let migration = migrations.objects.first(where: {
                $0.metadata.namespace == podInfo.namespace && $0.spec.targetPod == podInfo.name
                    && $0.spec.targetNode == options.nodeName
                    && $0.spec.containers.contains { $0.name == podInfo.containerName }
                    && $0.metadata.uid == info.migrationUID
            }), let name = migration.metadata.name
        else {
            throw refuseReport(
                podInfo,
                "no Migration of uid \(info.migrationUID) is claimed by pod "
                    + "\(podInfo.namespace)/\(podInfo.name) on this node"
            )
        }
        let restoreKey = Self.restoreKey(namespace: podInfo.namespace, migration: name, container: podInfo.containerName)
        guard let inFlight = restoring.withLock({ $0[restoreKey] }), inFlight == info.imageID else {
            throw refuseReport(
                podInfo,
                "this manager serves no restore of container \(info.imageID) for \(podInfo.namespace)/\(name) "
                    + "(it was restarted since the Restore, or the report came already)"
            )
        }
        let restoredAt = info.restoreEnd.map(MigrationPlanner.microTime)
        // A live migration's freeze time runs from the source's pausedAt (its status) to restoredAt.
        let live = info.liveMigration
            && migration.spec.containers.contains { $0.name == podInfo.containerName && $0.pageServer != nil }
        let pausedAt = info.pausedAt
            ?? migration.containerStatus(podInfo.containerName)?.pausedAt.flatMap { MigrationPlanner.timestamp(microTime: $0) }
        closePageProxy(imageID: info.imageID)
        restoring.withLock { _ = $0.removeValue(forKey: restoreKey) }
        // The target's copy of the archive is no longer needed once the shim extracted it.
        try? FileManager.default.removeItem(atPath: layout.migrationArchive(containerID: info.imageID))
        let failure = info.failure
        var finalAlready: MigrationPhase?
        var staleUID: String?
        try await writer.modify(namespace: podInfo.namespace, name: name, subresource: "status") { m in
            guard m.metadata.uid == info.migrationUID else {
                staleUID = m.metadata.uid ?? "-"
                return nil
            }
            if let phase = m.containerStatus(podInfo.containerName)?.condition.phase, phase.isFinal {
                finalAlready = phase
                return nil
            }
            finalAlready = nil
            let status = MigrationPlanner.status(m.status, setting: podInfo.containerName) {
                if failure.isEmpty {
                    $0.condition = MigrationCondition(phase: .completed)
                    if live, let restoredAt, let paused = pausedAt, let end = info.restoreEnd {
                        $0.restoredAt = restoredAt
                        $0.migrationDuration = MigrationPlanner.goDuration(
                            nanoseconds: end.unixNanoseconds - paused.unixNanoseconds
                        )
                    }
                } else {
                    $0.condition = MigrationCondition(phase: .failed, message: failure)
                }
            }
            return ["status": MigrationWriter.json(status)]
        }
        if let staleUID {
            throw refuseReport(podInfo, "Migration \(podInfo.namespace)/\(name) is now uid \(staleUID)")
        }
        if let finalAlready {
            throw refuseReport(
                podInfo,
                "container \(podInfo.containerName) of \(podInfo.namespace)/\(name) is already \(finalAlready.rawValue)"
            )
        }
        logger.info(
            failure.isEmpty ? "migration completed" : "migration failed on the target",
            metadata: ["migration": "\(podInfo.namespace)/\(name)", "reason": "\(failure)"]
        )
        return NodeAPI.RestoreResponse(migrationInfo: info)
    }

    /// Logs and makes the refusal of a report that is not about the current attempt (decision 0065).
    private func refuseReport(_ podInfo: NodeAPI.PodInfo, _ reason: String) -> TTRPCStatusError {
        logger.warning(
            "refused a stale FinishRestore",
            metadata: ["pod": "\(podInfo.namespace)/\(podInfo.name)", "reason": "\(reason)"]
        )
        return TTRPCStatusError(.failedPrecondition, "FinishRestore refused: \(reason)")
    }
}

extension NodeTLS {
    /// A node service client to a peer over mutual TLS.
    static func connect(host: String, port: Int, tls: NodeTLS, group: any EventLoopGroup) async throws -> NodeClient {
        NodeClient(
            client: try await TTRPCClient.connect(host: host, port: port, group: group) { try tls.prepareClient($0) }
        )
    }
}
