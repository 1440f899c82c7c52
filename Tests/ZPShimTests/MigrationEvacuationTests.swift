import Foundation
import Logging
import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPImageArchive
import ZPTTRPC
import ZPTestSupport

@testable import ZPShim

// The source shim's evacuation (decision 0048, steps 3-4) against a node service played by a
// ttrpc server on the node socket: what it hands over, and that every failure means "stop
// normally" with nothing left in <state-dir>/m.

/// The order in which a test's concurrent steps happened.
final class EventOrder: Sendable {
    let list = Mutex<[String]>([])
}

/// What the played node service saw.
final class NodeCalls: Sendable {
    let evacs = Mutex<[NodeAPI.EvacRequest]>([])
    let prepares = Mutex<[NodeAPI.EvacRequest]>([])
}

/// A folder with run/ and state/ for a NodeLayout, removed at the end.
private func withLayout(_ body: (NodeLayout) async throws -> Void) async throws {
    let root = "/tmp/" + uniqueName("zpev")
    try FileManager.default.createDirectory(atPath: root + "/run", withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: root) }
    try await body(NodeLayout(runDirectory: root + "/run", stateDirectory: root + "/state"))
}

/// Serves PrepareEvac with `prepare` (after `gate` yields, if given) and Evac with CLAIMED on
/// `layout.nodeSocket` during `body`.
private func withNode(
    _ layout: NodeLayout,
    prepare: NodeAPI.EvacResponse,
    gate: AsyncStream<Void>? = nil,
    _ body: (NodeCalls) async throws -> Void
) async throws {
    let calls = NodeCalls()
    var router = TTRPCRouter()
    router.register(service: NodeAPI.service, method: NodeAPI.Method.prepareEvac.rawValue) { call in
        let request = try NodeAPI.EvacRequest(decoding: call.payload)
        calls.prepares.withLock { $0.append(request) }
        // A node still waiting for the claim: answers once the test opens the gate.
        if let gate {
            for await _ in gate { break }
        }
        return prepare.encoded()
    }
    router.register(service: NodeAPI.service, method: NodeAPI.Method.evac.rawValue) { call in
        let request = try NodeAPI.EvacRequest(decoding: call.payload)
        calls.evacs.withLock { $0.append(request) }
        return NodeAPI.EvacResponse(outcome: .claimed).encoded()
    }
    var logger = Logger(label: "node")
    logger.logLevel = .critical
    let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run(unixSocketPath: layout.nodeSocket) }
        #expect(await eventuallyAsync { FileManager.default.fileExists(atPath: layout.nodeSocket) })
        try await body(calls)
        group.cancelAll()
    }
}

private let containerID = String(repeating: "c3", count: 32)
private let pod = NodeAPI.PodInfo(name: "web-5d9c-aaaaa", namespace: "default", containerName: "web")

/// A checkpoint folder and an upper folder with a few files.
private func sourceFolders(_ layout: NodeLayout) throws -> (images: String, upper: String) {
    let images = layout.stateDirectory + "/i/k8s.io/" + containerID
    let upper = layout.stateDirectory + "/upper"
    try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: upper + "/data", withIntermediateDirectories: true)
    _ = FileManager.default.createFile(
        atPath: images + "/pages-1.img",
        contents: Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 / 4096) })
    )
    _ = FileManager.default.createFile(atPath: images + "/inventory.img", contents: Data("inventory".utf8))
    _ = FileManager.default.createFile(atPath: upper + "/data/counter.txt", contents: Data("41\n".utf8))
    return (images, upper)
}

@Suite struct MigrationEvacuationTests {
    /// kubelet's SIGKILL after the grace period comes while the first Kill's evacuation still waits
    /// for the node: it waits too (killing meanwhile would remove the images being archived), and
    /// the node is asked once.
    @Test func killDuringTheEvacuation_waitsForIt_andTheNodeIsAskedOnce() async throws {
        try await withLayout { layout in
            let (images, upper) = try sourceFolders(layout)
            let (gate, open) = AsyncStream<Void>.makeStream()
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .unclaimed), gate: gate) { calls in
                let migration = ContainerMigration(
                    layout: layout,
                    containerID: containerID,
                    pod: pod,
                    imagesDirectory: images,
                    upperDirectory: upper,
                    group: MultiThreadedEventLoopGroup.singleton,
                    logger: Logger(label: "evacuation"),
                    restoreImages: { throw ShimError.notImplemented("no restore in this test") },
                    removeImages: {}
                )
                let order = EventOrder()
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        await migration.evacuate()
                        order.list.withLock { $0.append("first kill") }
                    }
                    #expect(await eventuallyAsync { calls.prepares.withLock { $0.count } == 1 })
                    group.addTask {
                        await migration.evacuate()
                        order.list.withLock { $0.append("second kill") }
                    }
                    #expect(await eventuallyAsync { migration.killsWaiting == 1 })
                    order.list.withLock { $0.append("node answers") }
                    open.yield()
                    open.finish()
                }
                #expect(order.list.withLock { $0.first } == "node answers" && order.list.withLock { $0.count } == 3)
                #expect(calls.prepares.withLock { $0.count } == 1)
                // A Kill after it returns at once.
                await migration.evacuate()
                #expect(calls.prepares.withLock { $0.count } == 1)
            }
        }
    }

    @Test func claimed_handsOverImagesAndChangedFiles() async throws {
        try await withLayout { layout in
            let (images, upper) = try sourceFolders(layout)
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(
                    layout: layout,
                    containerID: containerID,
                    pod: pod,
                    imagesDirectory: images,
                    upperDirectory: upper,
                    group: MultiThreadedEventLoopGroup.singleton
                ).run()
                guard case .evacuated(let summary, _) = outcome else {
                    Issue.record("not evacuated: \(outcome)")
                    return
                }
                print(
                    "evacuated: \(summary.entries) entries, \(summary.dataBytes) bytes -> \(summary.archiveBytes) bytes archived"
                )
                let evac = try #require(calls.evacs.withLock { $0.first })
                #expect(evac.podInfo == pod)
                #expect(evac.migrationInfo?.imageID == containerID)
                #expect(evac.migrationInfo?.migrateData == true)
                #expect(evac.migrationInfo?.pausedAt != nil)
                // What the target extracts: the images and the changed files, byte for byte.
                let out = layout.stateDirectory + "/extracted"
                try ImageArchive.extract(layout.migrationArchive(containerID: containerID), into: out, ownership: false)
                #expect(
                    FileManager.default.contents(atPath: out + "/images/pages-1.img")
                        == FileManager.default.contents(atPath: images + "/pages-1.img")
                )
                #expect(FileManager.default.contents(atPath: out + "/upper/data/counter.txt") == Data("41\n".utf8))
            }
        }
    }

    @Test func disableMigrateData_handsOverTheImagesOnly() async throws {
        try await withLayout { layout in
            let (images, _) = try sourceFolders(layout)
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(
                    layout: layout,
                    containerID: containerID,
                    pod: pod,
                    imagesDirectory: images,
                    upperDirectory: nil,
                    group: MultiThreadedEventLoopGroup.singleton
                ).run()
                guard case .evacuated = outcome else {
                    Issue.record("not evacuated: \(outcome)")
                    return
                }
                #expect(calls.evacs.withLock { $0.first?.migrationInfo?.migrateData } == false)
                let out = layout.stateDirectory + "/extracted"
                try ImageArchive.extract(layout.migrationArchive(containerID: containerID), into: out, ownership: false)
                #expect(FileManager.default.fileExists(atPath: out + "/images/inventory.img"))
                #expect(!FileManager.default.fileExists(atPath: out + "/upper"))
            }
        }
    }

    @Test func unclaimed_stopsNormally_andWritesNothing() async throws {
        try await withLayout { layout in
            let (images, upper) = try sourceFolders(layout)
            try await withNode(
                layout,
                prepare: NodeAPI.EvacResponse(outcome: .unclaimed, reason: "no replacement pod claimed it within 10s")
            ) { calls in
                let outcome = await MigrationEvacuation(
                    layout: layout,
                    containerID: containerID,
                    pod: pod,
                    imagesDirectory: images,
                    upperDirectory: upper,
                    group: MultiThreadedEventLoopGroup.singleton
                ).run()
                #expect(outcome == .stopNormally(reason: "unclaimed: no replacement pod claimed it within 10s"))
                #expect(calls.evacs.withLock { $0.isEmpty })
                #expect(!FileManager.default.fileExists(atPath: layout.migrationDirectory(containerID: containerID)))
            }
        }
    }

    @Test func unreadableImages_stopNormally_andLeaveNothing() async throws {
        try await withLayout { layout in
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(
                    layout: layout,
                    containerID: containerID,
                    pod: pod,
                    imagesDirectory: layout.stateDirectory + "/no-such-images",
                    upperDirectory: nil,
                    group: MultiThreadedEventLoopGroup.singleton
                ).run()
                guard case .stopNormally(let reason) = outcome else {
                    Issue.record("evacuated without images")
                    return
                }
                print("unreadable images: \(reason)")
                #expect(reason.hasPrefix("writing the migration image failed"))
                #expect(calls.evacs.withLock { $0.isEmpty })
                #expect(!FileManager.default.fileExists(atPath: layout.migrationDirectory(containerID: containerID)))
            }
        }
    }

    @Test func noNodeService_stopsNormally() async throws {
        try await withLayout { layout in
            let outcome = await MigrationEvacuation(
                layout: layout,
                containerID: containerID,
                pod: pod,
                imagesDirectory: "/nonexistent",
                upperDirectory: nil,
                group: MultiThreadedEventLoopGroup.singleton
            ).run()
            guard case .stopNormally(let reason) = outcome else {
                Issue.record("evacuated without a node service")
                return
            }
            #expect(reason.hasPrefix("no node service at \(layout.nodeSocket)"))
        }
    }
}

/// Serves Restore (`restore` decides: answer or throw) and FinishRestore on the node socket.
final class RestoreCalls: Sendable {
    let finished = Mutex<[NodeAPI.RestoreRequest]>([])
}

private func withTargetNode(
    _ layout: NodeLayout,
    restore: @escaping @Sendable (NodeAPI.RestoreRequest) throws -> NodeAPI.RestoreResponse,
    _ body: (RestoreCalls) async throws -> Void
) async throws {
    let calls = RestoreCalls()
    var router = TTRPCRouter()
    router.register(service: NodeAPI.service, method: NodeAPI.Method.restore.rawValue) { call in
        try restore(try NodeAPI.RestoreRequest(decoding: call.payload)).encoded()
    }
    router.register(service: NodeAPI.service, method: NodeAPI.Method.finishRestore.rawValue) { call in
        let request = try NodeAPI.RestoreRequest(decoding: call.payload)
        calls.finished.withLock { $0.append(request) }
        return NodeAPI.RestoreResponse(migrationInfo: request.migrationInfo ?? NodeAPI.MigrationInfo()).encoded()
    }
    var logger = Logger(label: "node")
    logger.logLevel = .critical
    let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run(unixSocketPath: layout.nodeSocket) }
        #expect(await eventuallyAsync { FileManager.default.fileExists(atPath: layout.nodeSocket) })
        try await body(calls)
        group.cancelAll()
    }
}

private let targetContainerID = String(repeating: "d4", count: 32)
private let replacement = NodeAPI.PodInfo(name: "web-5d9c-bbbbb", namespace: "default", containerName: "web")

/// Writes an archive as the source shim does and puts it where the target's manager puts a pulled one.
private func pulledArchive(_ layout: NodeLayout, sourceLayout: NodeLayout) throws {
    let (images, upper) = try sourceFolders(sourceLayout)
    try FileManager.default.createDirectory(
        atPath: layout.migrationDirectory(containerID: targetContainerID),
        withIntermediateDirectories: true
    )
    try ImageArchive.write(
        sources: [("images", images), ("upper", upper)],
        to: layout.migrationArchive(containerID: targetContainerID)
    )
}

private func answer(ports: [Int32]) -> NodeAPI.RestoreResponse {
    var info = NodeAPI.MigrationInfo()
    info.imageID = targetContainerID
    info.ports = ports
    return NodeAPI.RestoreResponse(migrationInfo: info)
}

@Suite struct MigrationRestorationTests {
    @Test func restored_placesImagesAndChangedFiles_andKeepsNoArchive() async throws {
        try await withLayout { source in
            try await withLayout { layout in
                try pulledArchive(layout, sourceLayout: source)
                let images = layout.imageDirectory(containerdNamespace: "k8s.io", containerID: targetContainerID)
                let upper = layout.stateDirectory + "/snapshot/fs"
                try FileManager.default.createDirectory(atPath: upper, withIntermediateDirectories: true)
                try await withTargetNode(layout, restore: { _ in answer(ports: [8080]) }) { calls in
                    let outcome = await MigrationRestoration(
                        layout: layout,
                        containerID: targetContainerID,
                        pod: replacement,
                        imagesDirectory: images,
                        upperDirectory: upper,
                        group: MultiThreadedEventLoopGroup.singleton
                    ).run()
                    #expect(outcome == .restored(ports: [8080]))
                    #expect(FileManager.default.contents(atPath: images + "/inventory.img") == Data("inventory".utf8))
                    #expect(FileManager.default.contents(atPath: upper + "/data/counter.txt") == Data("41\n".utf8))
                    #expect(
                        !FileManager.default.fileExists(
                            atPath: layout.migrationDirectory(containerID: targetContainerID)
                        )
                    )
                    #expect(
                        calls.finished.withLock { $0.isEmpty },
                        "FinishRestore comes after the container is created"
                    )
                }
            }
        }
    }

    @Test func failedTransfer_startsFromScratch() async throws {
        try await withLayout { layout in
            let images = layout.imageDirectory(containerdNamespace: "k8s.io", containerID: targetContainerID)
            try await withTargetNode(
                layout,
                restore: { _ in
                    throw TTRPCStatusError(
                        .unavailable,
                        "Migration default/web-5d9c-aaaaa: pulling the image from 10.0.1.7:8090 failed: refused"
                    )
                }
            ) { calls in
                let outcome = await MigrationRestoration(
                    layout: layout,
                    containerID: targetContainerID,
                    pod: replacement,
                    imagesDirectory: images,
                    upperDirectory: nil,
                    group: MultiThreadedEventLoopGroup.singleton
                ).run()
                guard case .fromScratch(let reason) = outcome else {
                    Issue.record("restored without an image")
                    return
                }
                #expect(reason.contains("pulling the image from 10.0.1.7:8090 failed"))
                #expect(!FileManager.default.fileExists(atPath: images))
                #expect(calls.finished.withLock { $0.isEmpty }, "the node already failed the Migration")
            }
        }
    }

    @Test func corruptArchive_startsFromScratch_tellsTheNode_andLeavesNothing() async throws {
        try await withLayout { source in
            try await withLayout { layout in
                try pulledArchive(layout, sourceLayout: source)
                // Damaged after the manager checked it (or written by a broken source).
                let archive = layout.migrationArchive(containerID: targetContainerID)
                let handle = try #require(FileHandle(forWritingAtPath: archive))
                try handle.seek(toOffset: 40)
                try handle.write(contentsOf: Data(repeating: 0xa5, count: 64))
                try handle.close()
                let images = layout.imageDirectory(containerdNamespace: "k8s.io", containerID: targetContainerID)
                let upper = layout.stateDirectory + "/snapshot/fs"
                try FileManager.default.createDirectory(atPath: upper, withIntermediateDirectories: true)
                try await withTargetNode(layout, restore: { _ in answer(ports: []) }) { calls in
                    let outcome = await MigrationRestoration(
                        layout: layout,
                        containerID: targetContainerID,
                        pod: replacement,
                        imagesDirectory: images,
                        upperDirectory: upper,
                        group: MultiThreadedEventLoopGroup.singleton
                    ).run()
                    guard case .fromScratch(let reason) = outcome else {
                        Issue.record("restored from a corrupt archive")
                        return
                    }
                    print("corrupt archive on the target: \(reason)")
                    #expect(!FileManager.default.fileExists(atPath: images))
                    #expect((try? FileManager.default.contentsOfDirectory(atPath: upper))?.isEmpty == true)
                    #expect(
                        !FileManager.default.fileExists(
                            atPath: layout.migrationDirectory(containerID: targetContainerID)
                        )
                    )
                    let finished = try #require(calls.finished.withLock { $0.first })
                    #expect(finished.migrationInfo?.failure == reason)
                }
            }
        }
    }

    @Test func upperDirectoryNotFresh_rollsBackEverything() async throws {
        try await withLayout { source in
            try await withLayout { layout in
                try pulledArchive(layout, sourceLayout: source)
                let images = layout.imageDirectory(containerdNamespace: "k8s.io", containerID: targetContainerID)
                let upper = layout.stateDirectory + "/snapshot/fs"
                try FileManager.default.createDirectory(atPath: upper + "/data", withIntermediateDirectories: true)
                try await withTargetNode(layout, restore: { _ in answer(ports: []) }) { calls in
                    let outcome = await MigrationRestoration(
                        layout: layout,
                        containerID: targetContainerID,
                        pod: replacement,
                        imagesDirectory: images,
                        upperDirectory: upper,
                        group: MultiThreadedEventLoopGroup.singleton
                    ).run()
                    guard case .fromScratch(let reason) = outcome else {
                        Issue.record("restored into a used upper directory")
                        return
                    }
                    #expect(reason.contains("is not a fresh container's"))
                    #expect(!FileManager.default.fileExists(atPath: images))
                    #expect((try? FileManager.default.contentsOfDirectory(atPath: upper)) == ["data"])
                    #expect((try? FileManager.default.contentsOfDirectory(atPath: upper + "/data"))?.isEmpty == true)
                    #expect(calls.finished.withLock { $0.count } == 1)
                }
            }
        }
    }
}
