// The target shim's side of an offline migration (decision 0048, steps 5 and 6): ask the node
// service for the image of the pod's claimed Migration (the manager pulls and checks it), extract
// it, put CRIU's images where this container's checkpoint images live and the source's changed
// files into this container's overlay upper directory, and tell the node how it ended. Every
// failure ends in "start from scratch" with nothing extracted left behind: never a
// half-restored container.
//
// Not wired into Create yet: creating a container scaled down from these images (the lifecycle
// starting in SCALED_DOWN, the restore options remapped to the target's mounts) is missing.
import FoundationEssentials
import Glibc
import NIOCore
import SystemPackage
import ZPAPI
import ZPCore
import ZPImageArchive

/// One restore of a migrated container's image on the target node.
struct MigrationRestoration: Sendable {
    /// What the shim does next.
    enum Outcome: Equatable, Sendable {
        /// The images are in place: create the container scaled down from them; `ports` are the
        /// source's listening ports (the activator's until the first restore); `migrationUID`
        /// the Migration's, which FinishRestore sends back (decision 0065).
        case restored(ports: [Int32], migrationUID: String = "")
        /// A live migration's images (without their memory pages) are in place: restore lazily,
        /// the pages coming through the container's page socket, where the node's manager listens
        /// (its proxy to the source; decision 0063).
        case restoredLive(ports: [Int32], migrationUID: String = "")
        /// No image (no Migration, no node service, a failed transfer or extraction): create the
        /// container from scratch.
        case fromScratch(reason: String)
    }

    /// The node's folders (`node.sock`, `<state-dir>/m/<id>`).
    let layout: NodeLayout
    /// The target container's id (the pulled image's name on this node).
    let containerID: String
    /// The replacement pod and the container, as the node service knows them.
    let pod: NodeAPI.PodInfo
    /// Where this container's checkpoint images go (must not exist yet).
    let imagesDirectory: String
    /// This container's overlay upper directory (empty, fresh from the snapshotter); nil when the
    /// changed files do not move (`disable-migrate-data`).
    let upperDirectory: String?
    /// The event loops for the node service client.
    let group: any EventLoopGroup
    /// How long Restore may take (the node's servers timeout and the transfer).
    var restoreTimeout: Duration = .seconds(300)

    /// Runs the restore; never throws: a failure is an ``Outcome/fromScratch(reason:)``, and when
    /// the image arrived but could not be used, the node is told (FinishRestore with the failure).
    func run() async -> Outcome {
        let client: NodeClient
        do {
            client = try await NodeClient.connect(socketPath: layout.nodeSocket, group: group)
        } catch {
            return .fromScratch(reason: "no node service at \(layout.nodeSocket): \(error)")
        }
        let outcome = await restore(client)
        await client.close()
        return outcome
    }

    private var info: NodeAPI.MigrationInfo {
        var info = NodeAPI.MigrationInfo()
        info.imageID = containerID
        info.migrateData = upperDirectory != nil
        return info
    }

    private func restore(_ client: NodeClient) async -> Outcome {
        let answer: NodeAPI.RestoreResponse
        do {
            answer = try await client.restore(
                NodeAPI.RestoreRequest(podInfo: pod, migrationInfo: info),
                timeout: restoreTimeout
            )
        } catch {
            // The node marked the Migration Failed (or there is none) and kept nothing.
            return .fromScratch(reason: "Restore failed: \(error)")
        }
        let directory = layout.migrationDirectory(containerID: containerID)
        let staging = directory + "/extracted"
        do throws(ImageArchiveError) {
            try ImageArchive.extract(layout.migrationArchive(containerID: containerID), into: staging)
            try place(staging + "/images", at: imagesDirectory)
            if let upperDirectory {
                do throws(ImageArchiveError) {
                    try moveContents(of: staging + "/upper", into: upperDirectory)
                } catch {
                    ImageArchive.removeTree(imagesDirectory)
                    throw error
                }
            }
        } catch {
            ImageArchive.removeTree(directory)
            let why = "the migration image cannot be used: \(error)"
            await finish(client, failure: why, migrationUID: answer.migrationInfo?.migrationUID ?? "")
            return .fromScratch(reason: why)
        }
        ImageArchive.removeTree(directory)
        let uid = answer.migrationInfo?.migrationUID ?? ""
        if let answered = answer.migrationInfo, answered.liveMigration {
            let socket = layout.targetPageSocket(containerID: containerID)
            guard FileManager.default.fileExists(atPath: socket) else {
                ImageArchive.removeTree(imagesDirectory)
                let why = "the node answered a live migration but does not listen on its page socket \(socket)"
                await finish(client, failure: why, migrationUID: uid)
                return .fromScratch(reason: why)
            }
            return .restoredLive(ports: answered.ports, migrationUID: uid)
        }
        return .restored(ports: answer.migrationInfo?.ports ?? [], migrationUID: uid)
    }

    /// Tells the node how the container was created (`failure` empty: from the image); a live
    /// migration's `restoredAt` (Unix nanoseconds) is when the restored process ran again;
    /// `migrationUID` is the Restore answer's (the node refuses a report about another Migration).
    func finish(failure: String, restoredAt: Int64? = nil, migrationUID: String) async {
        guard let client = try? await NodeClient.connect(socketPath: layout.nodeSocket, group: group) else { return }
        await finish(client, failure: failure, restoredAt: restoredAt, migrationUID: migrationUID)
        await client.close()
    }

    private func finish(_ client: NodeClient, failure: String, restoredAt: Int64? = nil, migrationUID: String) async {
        var finished = info
        finished.failure = failure
        finished.migrationUID = migrationUID
        finished.liveMigration = restoredAt != nil
        finished.restoreEnd = ProtobufTimestamp(
            unixNanoseconds: restoredAt ?? Int64(Date().timeIntervalSince1970 * 1_000_000_000)
        )
        _ = try? await client.finishRestore(NodeAPI.RestoreRequest(podInfo: pod, migrationInfo: finished))
    }

    /// Renames the extracted images folder to `target` (same file system: both under state-dir).
    private func place(_ source: String, at target: String) throws(ImageArchiveError) {
        guard FileManager.default.fileExists(atPath: source) else {
            throw ImageArchiveError("the archive has no images/ folder")
        }
        let parent = FilePath(target).removingLastComponent().string
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw ImageArchiveError("cannot create \(parent): \(error)")
        }
        guard rename(source, target) == 0 else {
            throw ImageArchiveError("cannot move the images to \(target): \(String(cString: strerror(errno)))")
        }
    }

    /// Moves each entry of the extracted upper folder into the container's upper directory
    /// (copying when it is on another file system). An archive without `upper/` moves nothing.
    /// On failure, what was moved is removed again: the container starts from scratch with the
    /// upper directory as the snapshotter made it.
    private func moveContents(of source: String, into target: String) throws(ImageArchiveError) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: source) else { return }
        var moved: [String] = []
        for entry in entries {
            let from = source + "/" + entry
            let to = target + "/" + entry
            guard !FileManager.default.fileExists(atPath: to) else {
                moved.forEach(ImageArchive.removeTree)
                throw ImageArchiveError(
                    "the upper directory \(target) already has \(entry): it is not a fresh container's"
                )
            }
            if rename(from, to) == 0 {
                moved.append(to)
                continue
            }
            do {
                try FileManager.default.copyItem(atPath: from, toPath: to)
                moved.append(to)
            } catch {
                ImageArchive.removeTree(to)
                moved.forEach(ImageArchive.removeTree)
                throw ImageArchiveError("cannot move the changed file \(entry) into \(target): \(error)")
            }
        }
    }
}
