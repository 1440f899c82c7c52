// The source shim's side of an offline migration (decision 0048, steps 3 and 4): ask the node
// service whether the pod's Migration was claimed and its target is ready, hand the checkpoint
// images and the container's changed files over as one archive (decision 0050), and tell the node
// it is there. Every way this can fail ends in "stop normally": the container is killed as
// without migration, and its Migration ends Unclaimed or Failed on the managers' side.
//
// A live migration (decision 0058) runs the same two steps around its lazy dump: PrepareEvac
// before, the archive of the images without their pages and Evac once CRIU's page server is ready.
import FoundationEssentials
import NIOCore
import ZPAPI
import ZPCore
import ZPImageArchive

/// One evacuation of a scaled-down container's checkpoint to a claimed target.
struct MigrationEvacuation: Sendable {
    /// What the shim does next.
    enum Outcome: Equatable, Sendable {
        /// The archive is handed over and published: kill the container, keep nothing else.
        /// `migrationUID` is the Migration's (Evac's answer), for a later AbortEvac (decision 0065).
        case evacuated(ImageArchiveSummary, migrationUID: String = "")
        /// No migration (not claimed, no node service, a failure): kill the container as usual.
        case stopNormally(reason: String)
    }

    /// The node's folders (`node.sock`, `<state-dir>/m/<id>`).
    let layout: NodeLayout
    /// The source container's id (the image's name on the node).
    let containerID: String
    /// The pod and container, as the node service knows them.
    let pod: NodeAPI.PodInfo
    /// CRIU's images of the container's last checkpoint.
    let imagesDirectory: String
    /// The overlay upper directory (the container's changed files); nil with `disable-migrate-data`.
    let upperDirectory: String?
    /// The event loops for the node service client.
    let group: any EventLoopGroup
    /// How long PrepareEvac may wait (longer than the node's claim and ready timeouts).
    var prepareTimeout: Duration = .seconds(330)

    /// A live migration (decision 0058): PrepareEvac and Evac say so, and Evac carries the page
    /// server's loopback port.
    var live = false

    /// Runs the evacuation; never throws: a failure is an ``Outcome/stopNormally(reason:)``.
    func run() async -> Outcome {
        let client: NodeClient
        do {
            client = try await NodeClient.connect(socketPath: layout.nodeSocket, group: group)
        } catch {
            return .stopNormally(reason: "no node service at \(layout.nodeSocket): \(error)")
        }
        var outcome = await prepare(client)
        if outcome == nil {
            outcome = await publish(
                client,
                pausedAt: ProtobufTimestamp(unixNanoseconds: Int64(Date().timeIntervalSince1970 * 1_000_000_000))
            )
        }
        await client.close()
        return outcome ?? .stopNormally(reason: "no outcome")
    }

    private var info: NodeAPI.MigrationInfo {
        var info = NodeAPI.MigrationInfo()
        info.imageID = containerID
        info.migrateData = upperDirectory != nil
        info.liveMigration = live
        return info
    }

    /// PrepareEvac: nil when a ready target claimed the migration (go on), else how to stop.
    func prepare(_ client: NodeClient) async -> Outcome? {
        let prepared: NodeAPI.EvacResponse
        do {
            prepared = try await client.prepareEvac(
                NodeAPI.EvacRequest(podInfo: pod, migrationInfo: info),
                timeout: prepareTimeout
            )
        } catch {
            return .stopNormally(reason: "PrepareEvac failed: \(error)")
        }
        switch prepared.outcome {
        case .claimed: return nil
        case .unclaimed, .noMigration, .failed:
            return .stopNormally(reason: "\(prepared.outcome)\(prepared.reason.isEmpty ? "" : ": \(prepared.reason)")")
        }
    }

    /// Archives the images (and changed files) and publishes them with Evac (a live migration's
    /// page server the node reaches at the container's page socket, decision 0063).
    func publish(_ client: NodeClient, pausedAt: ProtobufTimestamp) async -> Outcome {
        var info = info
        let directory = layout.migrationDirectory(containerID: containerID)
        let summary: ImageArchiveSummary
        do {
            try FileManager.default.createDirectory(
                atPath: directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            var sources: [(name: String, folder: String)] = [("images", imagesDirectory)]
            if let upperDirectory { sources.append(("upper", upperDirectory)) }
            summary = try ImageArchive.write(sources: sources, to: layout.migrationArchive(containerID: containerID))
        } catch {
            ImageArchive.removeTree(directory)
            return .stopNormally(reason: "writing the migration image failed: \(error)")
        }
        info.pausedAt = pausedAt
        let published: NodeAPI.EvacResponse
        do {
            published = try await client.evac(NodeAPI.EvacRequest(podInfo: pod, migrationInfo: info))
            guard published.outcome == .claimed else {
                ImageArchive.removeTree(directory)
                return .stopNormally(reason: "Evac answered \(published.outcome): \(published.reason)")
            }
        } catch {
            ImageArchive.removeTree(directory)
            return .stopNormally(reason: "Evac failed: \(error)")
        }
        return .evacuated(summary, migrationUID: published.migrationUID)
    }

    /// AbortEvac (decision 0064): a published live migration's dump ended without the target
    /// taking the pages; the node marks the Migration Failed with `reason` and closes the page
    /// proxy at once. On a connection of its own (the dump's closed with the dump).
    /// - Returns: nil when the node took it, else why not (for the log).
    func abort(reason: String, migrationUID: String) async -> String? {
        var info = info
        info.failure = reason
        info.migrationUID = migrationUID
        let client: NodeClient
        do {
            client = try await NodeClient.connect(socketPath: layout.nodeSocket, group: group)
        } catch {
            return "no node service at \(layout.nodeSocket): \(error)"
        }
        var refused: String?
        do {
            _ = try await client.abortEvac(NodeAPI.EvacRequest(podInfo: pod, migrationInfo: info))
        } catch {
            refused = "\(error)"
        }
        await client.close()
        return refused
    }
}
