// Offline migration as the shim wires it (decision 0057): a container named in
// `zeropod.ctrox.dev/migrate` asks its node at Create whether a claimed Migration brings it an
// image (MigrationRestoration), restores from that image at Start instead of running `runc start`,
// and on the Kill of its scaled-down init hands its checkpoint to the claimed target
// (MigrationEvacuation) before it stops. Every failure falls back to what happens without
// migration: start from scratch, stop normally.
import Logging
import NIOCore
import Synchronization
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
    private let group: any EventLoopGroup
    private let logger: Logger
    private struct State {
        /// A migrated image waits in the images folder for Start.
        var imageWaiting = false
        /// The source's evacuation (once per container).
        var evacuation = Evacuation.notStarted
    }
    private enum Evacuation {
        case notStarted
        /// Runs; later Kills wait for it.
        case running(waiters: [CheckedContinuation<Void, Never>])
        case finished
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
        removeImages: @escaping @Sendable () -> Void
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
        case .restored(let ports):
            state.withLock { $0.imageWaiting = true }
            logger.info(
                "migration: the image of the replaced container is in place; Start restores it",
                metadata: ["ms": "\(milliseconds(ContinuousClock.now - start))", "ports": "\(ports)"]
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

    /// Tells the node how Start ended (`failure` empty: restored from the image).
    func finish(failure: String) async {
        await restoration.finish(failure: failure)
    }

    // MARK: source

    /// Kills waiting for the evacuation in flight.
    var killsWaiting: Int {
        state.withLock { s in
            if case .running(let waiters) = s.evacuation { return waiters.count }
            return 0
        }
    }

    /// At the Kill of a scaled-down init: hands the checkpoint to the claimed target, once. The
    /// container stops afterwards whatever the outcome. A Kill that comes while it runs (kubelet's
    /// SIGKILL after the grace period) waits for it: killing meanwhile would remove the images
    /// being archived.
    func evacuate() async {
        enum Turn { case run, wait, done }
        let turn = state.withLock { s -> Turn in
            switch s.evacuation {
            case .notStarted:
                s.evacuation = .running(waiters: [])
                return .run
            case .running: return .wait
            case .finished: return .done
            }
        }
        switch turn {
        case .done: return
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
            return
        case .run: break
        }
        defer {
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                defer { s.evacuation = .finished }
                if case .running(let waiters) = s.evacuation { return waiters }
                return []
            }
            for waiter in waiters { waiter.resume() }
        }
        let start = ContinuousClock.now
        let evacuation = MigrationEvacuation(
            layout: layout,
            containerID: containerID,
            pod: pod,
            imagesDirectory: imagesDirectory,
            upperDirectory: upperDirectory,
            group: group
        )
        switch await evacuation.run() {
        case .evacuated(let summary):
            logger.info(
                "migration: checkpoint handed to the claimed target",
                metadata: ["ms": "\(milliseconds(ContinuousClock.now - start))", "archive": "\(summary)"]
            )
        case .stopNormally(let reason):
            logger.info("migration: stopping without migrating: \(reason)")
        }
    }
}
