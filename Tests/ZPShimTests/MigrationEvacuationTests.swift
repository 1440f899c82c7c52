import Foundation
import Logging
import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPImageArchive
import ZPTestSupport
import ZPTTRPC
@testable import ZPShim

// The source shim's evacuation (decision 0048, steps 3-4) against a node service played by a
// ttrpc server on the node socket: what it hands over, and that every failure means "stop
// normally" with nothing left in <state-dir>/m.

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

/// Serves PrepareEvac with `prepare` and Evac with CLAIMED on `layout.nodeSocket` during `body`.
private func withNode(_ layout: NodeLayout, prepare: NodeAPI.EvacResponse, _ body: (NodeCalls) async throws -> Void) async throws {
    let calls = NodeCalls()
    var router = TTRPCRouter()
    router.register(service: NodeAPI.service, method: NodeAPI.Method.prepareEvac.rawValue) { call in
        let request = try NodeAPI.EvacRequest(decoding: call.payload)
        calls.prepares.withLock { $0.append(request) }
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
    let images = layout.stateDirectory + "/i/k8s.io/" + containerID, upper = layout.stateDirectory + "/upper"
    try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: upper + "/data", withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: images + "/pages-1.img", contents: Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 / 4096) }))
    FileManager.default.createFile(atPath: images + "/inventory.img", contents: Data("inventory".utf8))
    FileManager.default.createFile(atPath: upper + "/data/counter.txt", contents: Data("41\n".utf8))
    return (images, upper)
}

@Suite struct MigrationEvacuationTests {
    @Test func claimed_handsOverImagesAndChangedFiles() async throws {
        try await withLayout { layout in
            let (images, upper) = try sourceFolders(layout)
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(layout: layout, containerID: containerID, pod: pod, imagesDirectory: images,
                                                        upperDirectory: upper, group: MultiThreadedEventLoopGroup.singleton).run()
                guard case .evacuated(let summary) = outcome else { Issue.record("not evacuated: \(outcome)"); return }
                print("evacuated: \(summary.entries) entries, \(summary.dataBytes) bytes -> \(summary.archiveBytes) bytes archived")
                let evac = try #require(calls.evacs.withLock { $0.first })
                #expect(evac.podInfo == pod)
                #expect(evac.migrationInfo?.imageID == containerID)
                #expect(evac.migrationInfo?.migrateData == true)
                #expect(evac.migrationInfo?.pausedAt != nil)
                // What the target extracts: the images and the changed files, byte for byte.
                let out = layout.stateDirectory + "/extracted"
                try ImageArchive.extract(layout.migrationArchive(containerID: containerID), into: out, ownership: false)
                #expect(FileManager.default.contents(atPath: out + "/images/pages-1.img") == FileManager.default.contents(atPath: images + "/pages-1.img"))
                #expect(FileManager.default.contents(atPath: out + "/upper/data/counter.txt") == Data("41\n".utf8))
            }
        }
    }

    @Test func disableMigrateData_handsOverTheImagesOnly() async throws {
        try await withLayout { layout in
            let (images, _) = try sourceFolders(layout)
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(layout: layout, containerID: containerID, pod: pod, imagesDirectory: images,
                                                        upperDirectory: nil, group: MultiThreadedEventLoopGroup.singleton).run()
                guard case .evacuated = outcome else { Issue.record("not evacuated: \(outcome)"); return }
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
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .unclaimed, reason: "no replacement pod claimed it within 10s")) { calls in
                let outcome = await MigrationEvacuation(layout: layout, containerID: containerID, pod: pod, imagesDirectory: images,
                                                        upperDirectory: upper, group: MultiThreadedEventLoopGroup.singleton).run()
                #expect(outcome == .stopNormally(reason: "unclaimed: no replacement pod claimed it within 10s"))
                #expect(calls.evacs.withLock { $0.isEmpty })
                #expect(!FileManager.default.fileExists(atPath: layout.migrationDirectory(containerID: containerID)))
            }
        }
    }

    @Test func unreadableImages_stopNormally_andLeaveNothing() async throws {
        try await withLayout { layout in
            try await withNode(layout, prepare: NodeAPI.EvacResponse(outcome: .claimed)) { calls in
                let outcome = await MigrationEvacuation(layout: layout, containerID: containerID, pod: pod,
                                                        imagesDirectory: layout.stateDirectory + "/no-such-images", upperDirectory: nil,
                                                        group: MultiThreadedEventLoopGroup.singleton).run()
                guard case .stopNormally(let reason) = outcome else { Issue.record("evacuated without images"); return }
                print("unreadable images: \(reason)")
                #expect(reason.hasPrefix("writing the migration image failed"))
                #expect(calls.evacs.withLock { $0.isEmpty })
                #expect(!FileManager.default.fileExists(atPath: layout.migrationDirectory(containerID: containerID)))
            }
        }
    }

    @Test func noNodeService_stopsNormally() async throws {
        try await withLayout { layout in
            let outcome = await MigrationEvacuation(layout: layout, containerID: containerID, pod: pod, imagesDirectory: "/nonexistent",
                                                    upperDirectory: nil, group: MultiThreadedEventLoopGroup.singleton).run()
            guard case .stopNormally(let reason) = outcome else { Issue.record("evacuated without a node service"); return }
            #expect(reason.hasPrefix("no node service at \(layout.nodeSocket)"))
        }
    }
}
