// Offline migration as the shim wires it (decision 0057): a container named in
// `zeropod.ctrox.dev/migrate` asks its node at Create whether a claimed Migration brings it an
// image (MigrationRestoration), restores from that image at Start instead of running `runc start`,
// and on the Kill of its scaled-down init hands its checkpoint to the claimed target
// (MigrationEvacuation) before it stops. Every failure falls back to what happens without
// migration: start from scratch, stop normally.
import Logging
import NIOCore
import Synchronization
import SystemPackage
import ZPAPI
import ZPCore
import ZPScaleDown
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One container's offline migration: both ends, since any container may be a migration's source
/// (when its pod is deleted) or its target (when it replaces one).
final class ContainerMigration: Sendable {
    /// The node's folders (node socket, migration images).
    let layout: NodeLayout
    /// The container id.
    let containerID: String
    /// The pod and container, as the node service knows them.
    let pod: NodeAPI.PodInfo
    /// Where this container's checkpoint images live.
    let imagesDirectory: String
    /// The overlay upper directory (changed files), nil with `disable-migrate-data` or when the
    /// rootfs is no overlay.
    let upperDirectory: String?
    /// Restores the container from the migrated images in ``imagesDirectory`` (ZPCheckpoint with
    /// `migrated`), removing them afterwards.
    let restoreImages: @Sendable () async throws -> RestoredProcess
    /// Removes the checkpoint images.
    let removeImages: @Sendable () -> Void
    /// `zeropod.ctrox.dev/live-migrate` names the container (decision 0058): a running one moves
    /// with its memory pages on demand.
    let live: Bool
    /// Live: dumps the running container lazily (page server port, CRIU config file, bound, the
    /// readiness stream); see ``CRIUCheckpoints/checkpointLive(pageServerPort:configFile:timeout:ready:)``.
    let dumpLive: @Sendable (Int32, String, Duration, AsyncStream<Int64>.Continuation) async throws -> ScaleDownReport
    /// Live: restores lazily from the migrated images, `criu lazy-pages` fetching the pages from
    /// this loopback port (the shim's relay to the node's page socket).
    let restoreLive: @Sendable (Int32) async throws -> (RestoredProcess, LivePages)
    /// Live: how long the pages may take to move (node.conf's `pages-transfer-timeout`, default
    /// 5 minutes as the original's `-pages-transfer-timeout`): the source's lazy dump and the
    /// target's wait for its lazy-pages daemon are bounded by it.
    let pagesTransferTimeout: Duration
    private let group: any EventLoopGroup
    private let logger: Logger
    private struct State {
        /// A migrated image waits in the images folder for Start.
        var imageWaiting = false
        /// The source's evacuation (once per container).
        var evacuation = Evacuation.notStarted
        /// A live migration's image waits (its pages come through the node's page socket).
        var liveImage = false
        /// The target's relay from the host's loopback (`criu lazy-pages`) to the node's page
        /// socket, while the live restore runs (decision 0063).
        var pageRelay: PageRelay?
        /// The Migration's uid from the node's Restore answer, for FinishRestore (decision 0065).
        var migrationUID = ""
    }
    private enum Evacuation {
        case notStarted
        /// Runs; later Kills wait for it.
        case running(waiters: [CheckedContinuation<Void, Never>])
        /// Done; `moved`: a live evacuation ended the container (its process is gone).
        case finished(moved: Bool)
    }
    private let state = Mutex(State())

    init(
        layout: NodeLayout,
        containerID: String,
        pod: NodeAPI.PodInfo,
        imagesDirectory: String,
        upperDirectory: String?,
        group: any EventLoopGroup,
        logger: Logger,
        restoreImages: @escaping @Sendable () async throws -> RestoredProcess,
        removeImages: @escaping @Sendable () -> Void,
        live: Bool = false,
        pagesTransferTimeout: Duration = .seconds(300),
        dumpLive: @escaping @Sendable (Int32, String, Duration, AsyncStream<Int64>.Continuation) async throws
            -> ScaleDownReport = { _, _, _, _ in throw ScaleDownError("live migration is not wired") },
        restoreLive: @escaping @Sendable (Int32) async throws -> (RestoredProcess, LivePages) = { _ in
            throw ScaleDownError("live migration is not wired")
        }
    ) {
        self.layout = layout
        self.containerID = containerID
        self.pod = pod
        self.imagesDirectory = imagesDirectory
        self.upperDirectory = upperDirectory
        self.group = group
        self.logger = logger
        self.restoreImages = restoreImages
        self.removeImages = removeImages
        self.live = live
        self.pagesTransferTimeout = pagesTransferTimeout
        self.dumpLive = dumpLive
        self.restoreLive = restoreLive
    }

    /// The overlay upper directory of a Create's rootfs mounts (`upperdir=` of its overlay), nil
    /// when there is none.
    static func upperDirectory(of rootfs: [MountSpec]) -> String? {
        for mount in rootfs where mount.type == "overlay" {
            for option in mount.options where option.hasPrefix("upperdir=") {
                return String(option.dropFirst("upperdir=".count))
            }
        }
        return nil
    }

    private var restoration: MigrationRestoration {
        MigrationRestoration(
            layout: layout,
            containerID: containerID,
            pod: pod,
            imagesDirectory: imagesDirectory,
            upperDirectory: upperDirectory,
            group: group
        )
    }

    // MARK: target

    /// At Create, before the rootfs is mounted: asks the node for this container's migrated image
    /// and puts it in place (images, changed files). Without one the container starts from scratch.
    /// - Returns: whether a migrated image waits for Start.
    @discardableResult
    func fetchImage() async -> Bool {
        let start = ContinuousClock.now
        switch await restoration.run() {
        case .restored(let ports, let uid):
            state.withLock {
                $0.imageWaiting = true
                $0.migrationUID = uid
            }
            logger.info(
                "migration: the image of the replaced container is in place; Start restores it",
                metadata: ["ms": "\(milliseconds(ContinuousClock.now - start))", "ports": "\(ports)"]
            )
            return true
        case .restoredLive(let ports, let uid):
            state.withLock {
                $0.imageWaiting = true
                $0.liveImage = true
                $0.migrationUID = uid
            }
            logger.info(
                "migration: the live image (without its pages) is in place; Start restores it lazily",
                metadata: [
                    "ms": "\(milliseconds(ContinuousClock.now - start))", "ports": "\(ports)",
                    "page-socket": "\(layout.targetPageSocket(containerID: containerID))",
                ]
            )
            return true
        case .fromScratch(let reason):
            logger.info("migration: no image, the container starts from scratch: \(reason)")
            return false
        }
    }

    /// Takes the waiting image (true once, when ``fetchImage()`` placed one).
    func takeWaitingImage() -> Bool {
        state.withLock { s in
            defer { s.imageWaiting = false }
            return s.imageWaiting
        }
    }

    /// The last lines of CRIU's logs of a live restore (restore.log, lazy-pages.log in the images
    /// folder), for the log of a failure before the images are removed.
    func liveRestoreLogTails(lines: Int = 8) -> String {
        ["restore.log", "lazy-pages.log"].map { name in
            let text = (try? String(contentsOfFile: imagesDirectory + "/" + name, encoding: .utf8)) ?? "(none)"
            return name + ": " + text.split(separator: "\n").suffix(lines).joined(separator: " | ")
        }.joined(separator: "; ")
    }

    /// Whether the waiting image is a live one (taken once, with the image).
    func takeLiveImage() -> Bool {
        state.withLock { s in
            defer { s.liveImage = false }
            return s.liveImage
        }
    }

    /// Restores the waiting live image lazily: `criu lazy-pages` gets the pages from a loopback
    /// relay (in the host's network namespace, where the shim runs) to the node's page socket,
    /// where the node's manager relays them from the source (decision 0063). The relay stays
    /// until ``finish(failure:restoredAt:)``.
    func restoreLiveThroughNode() async throws -> (RestoredProcess, LivePages) {
        let relay = try await PageRelay.start(
            group: group,
            listen: .loopback(port: 0),
            backend: .unix(path: layout.targetPageSocket(containerID: containerID)),
            timeout: pagesTransferTimeout,
            logger: logger
        )
        state.withLock { $0.pageRelay = relay }
        do {
            return try await restoreLive(Int32(relay.port))
        } catch {
            closePageRelay()
            throw error
        }
    }

    /// Closes the target's page relay; the node's page socket of this container goes too when the
    /// node left it (its manager died before it closed its proxy).
    private func closePageRelay() {
        let relay = state.withLock { s -> PageRelay? in
            defer { s.pageRelay = nil }
            return s.pageRelay
        }
        guard let relay else { return }
        relay.close()
        try? FileManager.default.removeItem(atPath: layout.targetPageSocket(containerID: containerID))
    }

    /// Tells the node how Start ended (`failure` empty: restored from the image); `restoredAt`
    /// (Unix nanoseconds) for a live migration. A live restore's page relay closes first.
    func finish(failure: String, restoredAt: Int64? = nil) async {
        closePageRelay()
        let uid = state.withLock { $0.migrationUID }
        await restoration.finish(failure: failure, restoredAt: restoredAt, migrationUID: uid)
    }

    // MARK: source

    /// Kills waiting for the evacuation in flight.
    var killsWaiting: Int {
        state.withLock { s in
            if case .running(let waiters) = s.evacuation { return waiters.count }
            return 0
        }
    }

    /// Whose turn an evacuation is: nil when the caller runs it (it must call
    /// ``finishEvacuation(moved:)``), else whether the one that ran moved the container away
    /// (after waiting for it to end).
    private func takeTurn() async -> Bool? {
        enum Turn { case run, wait, done(Bool) }
        let turn = state.withLock { s -> Turn in
            switch s.evacuation {
            case .notStarted:
                s.evacuation = .running(waiters: [])
                return .run
            case .running: return .wait
            case .finished(let moved): return .done(moved)
            }
        }
        switch turn {
        case .run: return nil
        case .done(let moved): return moved
        case .wait:
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    guard case .running(var waiters) = s.evacuation else { return true }
                    waiters.append(waiter)
                    s.evacuation = .running(waiters: waiters)
                    return false
                }
                if resumeNow { waiter.resume() }
            }
            return state.withLock { s in
                if case .finished(let moved) = s.evacuation { return moved }
                return false
            }
        }
    }

    private func finishEvacuation(moved: Bool) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s.evacuation = .finished(moved: moved) }
            if case .running(let waiters) = s.evacuation { return waiters }
            return []
        }
        for waiter in waiters { waiter.resume() }
    }

    /// This container's evacuation (offline: the checkpoint; live: the images without pages).
    private func makeEvacuation(live: Bool) -> MigrationEvacuation {
        MigrationEvacuation(
            layout: layout,
            containerID: containerID,
            pod: pod,
            imagesDirectory: imagesDirectory,
            upperDirectory: upperDirectory,
            group: group,
            live: live
        )
    }

    /// At the Kill of a scaled-down init: hands the checkpoint to the claimed target, once. The
    /// container stops afterwards whatever the outcome. A Kill that comes while it runs (kubelet's
    /// SIGKILL after the grace period) waits for it: killing meanwhile would remove the images
    /// being archived.
    func evacuate() async {
        guard await takeTurn() == nil else { return }
        defer { finishEvacuation(moved: false) }
        let start = ContinuousClock.now
        let evacuation = makeEvacuation(live: false)
        switch await evacuation.run() {
        case .evacuated(let summary, _):
            logger.info(
                "migration: checkpoint handed to the claimed target",
                metadata: ["ms": "\(milliseconds(ContinuousClock.now - start))", "archive": "\(summary)"]
            )
        case .stopNormally(let reason):
            logger.info("migration: stopping without migrating: \(reason)")
        }
    }

    /// At the Kill of a running init named by `live-migrate` (decision 0058), once: when a ready
    /// target claimed the pod's Migration, dumps the container lazily (CRIU's page server on
    /// loopback), publishes the images without their pages, and returns when the target has
    /// taken the pages (or the bound passed): CRIU then killed the container's processes.
    /// - Returns: whether the container was moved (its processes are gone; the Kill sends no
    ///   signal); false: nothing happened, stop it as without migration. A Kill that comes while
    ///   it runs waits for it and gets the same answer.
    func evacuateLive() async -> Bool {
        if let moved = await takeTurn() { return moved }
        var moved = false
        defer { finishEvacuation(moved: moved) }
        let start = ContinuousClock.now
        let evacuation = makeEvacuation(live: true)
        let client: NodeClient
        do {
            client = try await NodeClient.connect(socketPath: layout.nodeSocket, group: group)
        } catch {
            logger.info("migration: stopping without migrating: no node service at \(layout.nodeSocket): \(error)")
            return false
        }
        if let stop = await evacuation.prepare(client) {
            await client.close()
            logger.info("migration: stopping without migrating: \(stop)")
            return false
        }
        let directory = layout.migrationDirectory(containerID: containerID)
        let port: Int32
        let configFile = directory + "/criu-live.conf"
        do {
            try FileManager.default.createDirectory(
                atPath: directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            // CRIU's RPC ignores `ps.address` for a lazy dump; its config file sets it.
            try Files.write(FilePath(configFile), Array("address 127.0.0.1\n".utf8), mode: 0o600)
            port = try pageServerLoopbackPort()
        } catch {
            await client.close()
            try? FileManager.default.removeItem(atPath: directory)
            logger.warning("migration: stopping without migrating: cannot prepare the live dump: \(error)")
            return false
        }
        let (ready, readiness) = AsyncStream<Int64>.makeStream()
        let timeout = pagesTransferTimeout
        let dumpEnded = DumpEnded()
        let dumped: Result<ScaleDownReport, any Error> = await withTaskGroup(
            of: Result<ScaleDownReport, any Error>?.self
        ) { group in
            group.addTask { [dumpLive] in
                do {
                    return .success(try await dumpLive(port, configFile, timeout, readiness))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask { [logger, layout, containerID, eventLoops = self.group] in
                // The page server listens and the images without pages are complete: publish them.
                for await frozenAt in ready {
                    // The node's manager runs in its pod's network namespace: it reaches CRIU's
                    // page server (on the host's loopback) through this relay from a unix socket
                    // in the node's run folder (decision 0063).
                    let socket = layout.pageSocket(containerID: containerID)
                    do {
                        let relay = try await PageRelay.start(
                            group: eventLoops,
                            listen: .unix(path: socket),
                            backend: .loopback(port: Int(port)),
                            timeout: timeout,
                            logger: logger
                        )
                        dumpEnded.relay.withLock { $0 = relay }
                    } catch {
                        logger.warning("migration: the live image could not be published: cannot listen on \(socket): \(error)")
                        releasePageServer(port: port)
                        break
                    }
                    let outcome = await evacuation.publish(
                        client,
                        pausedAt: ProtobufTimestamp(unixNanoseconds: frozenAt)
                    )
                    switch outcome {
                    case .evacuated(let summary, let uid):
                        dumpEnded.migrationUID.withLock { $0 = uid }
                        logger.info(
                            "migration: live image published; the target takes the pages",
                            metadata: [
                                "ms": "\(milliseconds(ContinuousClock.now - start))", "archive": "\(summary)",
                                "page-server": "127.0.0.1:\(port)", "page-socket": "\(socket)",
                            ]
                        )
                    case .stopNormally(let reason):
                        // Nobody will fetch the pages: end CRIU's wait (the tree is killed then).
                        logger.warning("migration: the live image could not be published: \(reason)")
                        releasePageServer(port: port)
                    }
                    break
                }
                return nil
            }
            group.addTask { [logger] in
                // The node's manager went away (restarted, crashed) while the dump waits: its page
                // proxy went with it, so no target can reach CRIU's page server any more. End
                // CRIU's wait now (the processes end, as the Kill asked) rather than at the bound.
                await client.waitClosed()
                guard !dumpEnded.value.withLock({ $0 }) else { return nil }
                logger.warning(
                    """
                    migration: the node's manager went away during the live transfer (its page proxy with it): \
                    ending the dump; the processes end as the Kill asked
                    """
                )
                releasePageServer(port: port)
                return nil
            }
            var dumped: Result<ScaleDownReport, any Error> = .failure(ScaleDownError("the live dump did not end"))
            for await result in group {
                guard let result else { continue }
                dumped = result
                dumpEnded.value.withLock { $0 = true }
                await client.close()  // ends the watch of the node's connection
            }
            return dumped
        }
        await client.close()
        dumpEnded.relay.withLock { relay in
            relay?.close()  // removes its socket
            relay = nil
        }
        try? FileManager.default.removeItem(atPath: configFile)
        switch dumped {
        case .success(let report):
            moved = true
            removeImages()  // the images went to the target; the pages never touched the disk
            logger.info(
                "migration: live migration's source side done (the pages were taken or the transfer ended)",
                metadata: ["ms": "\(milliseconds(ContinuousClock.now - start))", "criu": "\(report.details["criu"] ?? "-")"]
            )
        case .failure(let error):
            // CRIU resumed the processes (or never froze them): the Kill stops them as usual. At
            // the bound (the target took no pages in time) CRIU was killed: its ptrace hold on the
            // frozen processes went with it and they run on until the Kill's signal.
            let log = (try? String(contentsOfFile: imagesDirectory + "/dump.log", encoding: .utf8)) ?? ""
            let elapsed = ContinuousClock.now - start
            let why =
                elapsed >= timeout
                ? "the target did not take the pages within pages-transfer-timeout \(GoDuration.format(timeout)) "
                    + "(CRIU stopped after \(milliseconds(elapsed)) ms, the processes run on)"
                : "the live dump failed"
            logger.warning(
                "migration: \(why), stopping without migrating: \(error)",
                metadata: ["dump-log": "\(log.split(separator: "\n").suffix(8).joined(separator: " | "))"]
            )
            // The image was published: the node's Migration is Running and its page proxy open.
            // Tell it now (decision 0064) rather than leave both to the manager's own bound.
            if let uid = dumpEnded.migrationUID.withLock({ $0 }) {
                let reason = elapsed >= timeout ? why : "\(why): \(error)"
                if let refused = await evacuation.abort(reason: reason, migrationUID: uid) {
                    logger.warning("migration: the node did not take the end of the live dump: \(refused)")
                } else {
                    logger.info("migration: told the node the live dump ended without the target")
                }
            }
        }
        return moved
    }
}

/// Whether a live dump has ended, for the watch of the node's connection during it, and the relay
/// from the page socket to CRIU's page server while it runs.
private final class DumpEnded: Sendable {
    let value = Mutex(false)
    let relay = Mutex<PageRelay?>(nil)
    /// The Migration's uid from Evac's answer, once the image was published.
    let migrationUID = Mutex<String?>(nil)
}
