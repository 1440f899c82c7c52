import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import Yams
import ZPAPI
import ZPCore
import ZPKube
import ZPManager
import ZPTTRPC
import ZPTestSupport

@testable import KubeAPIDouble

// Migration between two managers (decisions 0048-0051): two Managers with -migration in one
// process, each with its own run and state folders and its own pod IP on loopback (127.0.0.2 and
// 127.0.0.3: the certificates name them), one API double with config/'s Migration CRD installed,
// the shims played by node clients on each node socket.

/// config/components/migration/crd.yaml as JSON.
func migrationCRD() throws -> JSON {
    try KubeAPIDouble.customResourceDefinition(
        yamlFile: TestPaths.packageRoot + "/config/components/migration/crd.yaml"
    )
}

/// A node of the test: a manager with -migration, its folders, its address.
struct MigrationNode {
    let name: String
    let ip: String
    let run: RunDirectory

    var layout: NodeLayout { run.layout }

    func configuration(
        claim: Duration = .seconds(5),
        servers: Duration = .seconds(5),
        port: Int = 0,
        caSecret: CASecret = CASecret()
    ) -> ManagerConfiguration {
        var options = MigrationOptions(nodeName: name, podIP: ip, nodeServerPort: port)
        options.claimTimeout = claim
        options.readyTimeout = .seconds(20)
        options.serversTimeout = servers
        options.lookupTimeout = .seconds(2)
        return ManagerConfiguration(
            metricsAddress: ListenAddress(host: "127.0.0.1", port: 0),
            nodeServerAddress: ListenAddress(host: "0.0.0.0", port: port),
            features: PodFeatures(statusLabels: false, inPlaceScaling: false),
            statusEvents: false,
            kubeconfig: nil,
            layout: layout,
            nodeName: name,
            podIP: ip,
            reportingInstance: name,
            migration: MigrationSettings(options: options, caSecret: caSecret)
        )
    }

    func manager(
        _ double: KubeAPIDouble,
        claim: Duration = .seconds(5),
        servers: Duration = .seconds(5),
        port: Int = 0,
        caSecret: CASecret = CASecret()
    ) throws -> Manager {
        var kube = double.clientConfiguration(token: "token")
        kube.requestTimeout = .seconds(5)
        var logger = Logger(label: "zeropod.manager.\(name)")
        logger.logLevel = .info
        return try Manager(
            configuration: configuration(claim: claim, servers: servers, port: port, caSecret: caSecret),
            kube: kube,
            writerOptions: { options in
                options.informer.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(500))
            },
            logger: logger
        )
    }

    /// A node client, once the node socket accepts connections (the manager binds it beside the
    /// TCP listener whose address the tests wait for; a restarted manager's socket file exists
    /// before it listens).
    func client() async throws -> NodeClient {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                return try await NodeClient.connect(
                    socketPath: layout.nodeSocket,
                    group: MultiThreadedEventLoopGroup.singleton
                )
            } catch  where ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}

let sourceID = String(repeating: "a1", count: 32)
let targetID = String(repeating: "b2", count: 32)

func migratingPod(
    _ name: String,
    node: String,
    hash: String = "5d9c",
    containerID: String,
    annotations: [String: String] = ["zeropod.ctrox.dev/migrate": "web"]
) -> JSON {
    [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": [
            "name": .string(name), "namespace": "default", "labels": ["pod-template-hash": .string(hash)],
            "annotations": .object(annotations.mapValues(JSON.string)),
        ],
        "spec": ["nodeName": .string(node), "containers": [["name": "web", "image": "counter"]]],
        "status": [
            "phase": "Running",
            "containerStatuses": [["name": "web", "containerID": .string("containerd://\(containerID)")]],
        ],
    ]
}

/// Starts a double with the CRD, the namespace of the CA secret and graceful pod deletion.
func withMigrationDouble(_ body: (KubeAPIDouble) async throws -> Void) async throws {
    try await withDouble { double in
        double.update { $0.gracefulPodDeletion = true }
        try double.installCustomResourceDefinition(migrationCRD())
        try double.create("namespaces", ["metadata": ["name": "zeropod-system"]])
        try await body(double)
    }
}

func phase(_ double: KubeAPIDouble, _ name: String, container: String = "web") -> String? {
    guard
        case .array(let list)? = double.object("migrations", namespace: "default", name: name)?[path: [
            "status", "containers",
        ]]
    else {
        return nil
    }
    return list.first { $0["name"]?.stringValue == container }?[path: ["condition", "phase"]]?.stringValue
}

func podInfo(_ pod: String) -> NodeAPI.PodInfo {
    NodeAPI.PodInfo(name: pod, namespace: "default", containerName: "web")
}

func info(_ id: String, paused: Bool = false, uid: String = "") -> NodeAPI.MigrationInfo {
    var m = NodeAPI.MigrationInfo()
    m.imageID = id
    m.migrationUID = uid
    if paused { m.pausedAt = ProtobufTimestamp(unixNanoseconds: Int64(Date().timeIntervalSince1970 * 1e9)) }
    return m
}

/// Runs both managers and `body`.
func withManagers(_ a: Manager, _ b: Manager, _ body: @Sendable () async throws -> Void) async throws {
    try await withManager(a) { a in
        try await withManager(b) { b in
            #expect(
                await eventuallyAsync {
                    a.nodeServiceAddress.withLock { $0 } != nil && b.nodeServiceAddress.withLock { $0 } != nil
                }
            )
            try await body()
        }
    }
}

/// A value shared between a test and its managers' closures.
final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func get() -> Value { value.withLock { $0 } }
    func set(_ new: Value) { value.withLock { $0 = new } }
}

@Suite(.serialized) struct MigrationTests {
    @Test func offlineProtocol_movesTheImage_completes_andCleansUp() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-aaaaa", node: "node-a", containerID: sourceID)
            )
            let managerA = try a.manager(double)
            let managerB = try b.manager(double)
            try await withManagers(managerA, managerB) {
                // The pod is deleted (drain): node-a's manager creates the Migration.
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-aaaaa").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-aaaaa") == "Pending" })
                let migration = try #require(double.object("migrations", namespace: "default", name: "web-5d9c-aaaaa"))
                #expect(migration[path: ["spec", "containers"]]?.arrayValue?.first?["id"]?.stringValue == sourceID)
                #expect(migration[path: ["metadata", "finalizers"]] == [.string(Migration.cleanupFinalizer)])
                // Its replacement is scheduled on node-b: node-b's manager claims it.
                var replacement = migratingPod("web-5d9c-bbbbb", node: "node-b", containerID: targetID)
                replacement["status"] = ["phase": "Pending"]
                try double.create("pods", namespace: "default", replacement)
                #expect(
                    await eventuallyAsync {
                        double.object("migrations", namespace: "default", name: "web-5d9c-aaaaa")?[path: [
                            "spec", "targetPod",
                        ]]?.stringValue == "web-5d9c-bbbbb"
                    }
                )
                // The shims: the source's Kill and the target's Create meet through the two managers.
                let payload = (0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                let source = try await a.client()
                let target = try await b.client()
                async let evacuated: NodeAPI.EvacResponse = {
                    let prepared = try await source.prepareEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-aaaaa"), migrationInfo: info(sourceID)),
                        timeout: .seconds(30)
                    )
                    #expect(prepared.outcome == .claimed, "\(prepared)")
                    try FileManager.default.createDirectory(
                        atPath: a.layout.migrationDirectory(containerID: sourceID),
                        withIntermediateDirectories: true
                    )
                    FileManager.default.createFile(
                        atPath: a.layout.migrationArchive(containerID: sourceID),
                        contents: Data(payload)
                    )
                    return try await source.evac(
                        NodeAPI.EvacRequest(
                            podInfo: podInfo("web-5d9c-aaaaa"),
                            migrationInfo: info(sourceID, paused: true)
                        )
                    )
                }()
                let restored = try await target.restore(
                    NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-bbbbb"), migrationInfo: info(targetID)),
                    timeout: .seconds(30)
                )
                #expect(try await evacuated.outcome == .claimed)
                #expect(restored.migrationInfo?.imageID == targetID)
                #expect(
                    FileManager.default.contents(atPath: b.layout.migrationArchive(containerID: targetID))
                        == Data(payload)
                )
                #expect(phase(double, "web-5d9c-aaaaa") == "Running")
                let uid = try #require(restored.migrationInfo?.migrationUID)
                let created = double.object("migrations", namespace: "default", name: "web-5d9c-aaaaa")
                #expect(uid == created?[path: ["metadata", "uid"]]?.stringValue)
                _ = try await target.finishRestore(
                    NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-bbbbb"), migrationInfo: info(targetID, uid: uid))
                )
                #expect(await eventuallyAsync { phase(double, "web-5d9c-aaaaa") == "Completed" })
                // The source's image goes once the Migration is final; the target's archive once finished.
                #expect(
                    await eventuallyAsync {
                        !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                    }
                )
                #expect(!FileManager.default.fileExists(atPath: b.layout.migrationArchive(containerID: targetID)))
                // Garbage collection deletes the Migration: the finalizer is removed by node-a.
                #expect(
                    double.call(
                        "DELETE",
                        "/apis/runtime.zeropod.ctrox.dev/v1/namespaces/default/migrations/web-5d9c-aaaaa"
                    ).status == 200
                )
                #expect(
                    await eventuallyAsync {
                        double.object("migrations", namespace: "default", name: "web-5d9c-aaaaa") == nil
                    }
                )
                await source.close()
                await target.close()
            }
            // Strict writes: no PUT of a Migration, and every Migration patch carried a resourceVersion.
            let writes = double.requests.filter {
                $0.path.contains("/migrations/") && $0.verb != "GET" && $0.verb != "DELETE"
            }
            #expect(!writes.isEmpty && !writes.contains { $0.verb == "PUT" })
            #expect(writes.filter { $0.verb == "PATCH" }.allSatisfy { $0.body.contains("\"resourceVersion\"") })
            // Both managers share one CA, stored once.
            #expect(double.objects("secrets").count == 1)
        }
    }

    @Test func unclaimedMigration_letsTheSourceStopNormally() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-ccccc", node: "node-a", containerID: sourceID)
            )
            let managerA = try a.manager(double, claim: .seconds(1))
            let managerB = try b.manager(double)
            try await withManagers(managerA, managerB) {
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-ccccc").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-ccccc") == "Pending" })
                let source = try await a.client()
                let start = ContinuousClock.now
                let answer = try await source.prepareEvac(
                    NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-ccccc"), migrationInfo: info(sourceID)),
                    timeout: .seconds(30)
                )
                #expect(answer.outcome == .unclaimed)
                #expect(ContinuousClock.now - start < .seconds(10))
                #expect(await eventuallyAsync { phase(double, "web-5d9c-ccccc") == "Unclaimed" })
                // A pod of another template that comes later does not claim it.
                var other = migratingPod("web-9f9f-ddddd", node: "node-b", hash: "9f9f", containerID: targetID)
                other["status"] = ["phase": "Pending"]
                try double.create("pods", namespace: "default", other)
                let target = try await b.client()
                let refused = await #expect(throws: TTRPCStatusError.self) {
                    try await target.restore(
                        NodeAPI.RestoreRequest(podInfo: podInfo("web-9f9f-ddddd"), migrationInfo: info(targetID)),
                        timeout: .seconds(30)
                    )
                }
                #expect(refused?.code == .notFound)
                await source.close()
                await target.close()
            }
        }
    }

    @Test func corruptedArchive_failsTheMigration_andTheTargetKeepsNothing() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-eeeee", node: "node-a", containerID: sourceID)
            )
            let managerA = try a.manager(double)
            let managerB = try b.manager(double)
            try await withManagers(managerA, managerB) {
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-eeeee").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-eeeee") == "Pending" })
                var replacement = migratingPod("web-5d9c-fffff", node: "node-b", containerID: targetID)
                replacement["status"] = ["phase": "Pending"]
                try double.create("pods", namespace: "default", replacement)
                let source = try await a.client()
                let target = try await b.client()
                async let evacuated: Void = {
                    _ = try await source.prepareEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-eeeee"), migrationInfo: info(sourceID)),
                        timeout: .seconds(30)
                    )
                    let archive = a.layout.migrationArchive(containerID: sourceID)
                    try FileManager.default.createDirectory(
                        atPath: a.layout.migrationDirectory(containerID: sourceID),
                        withIntermediateDirectories: true
                    )
                    FileManager.default.createFile(atPath: archive, contents: Data(repeating: 7, count: 64 << 20))
                    _ = try await source.evac(
                        NodeAPI.EvacRequest(
                            podInfo: podInfo("web-5d9c-eeeee"),
                            migrationInfo: info(sourceID, paused: true)
                        )
                    )
                    // The archive is damaged after its digest was published (disk error, tampering):
                    // near its end, which the target reaches after hundreds of milliseconds of
                    // transfer, long after this write.
                    let handle = try #require(FileHandle(forWritingAtPath: archive))
                    try handle.seek(toOffset: (64 << 20) - (1 << 20))
                    try handle.write(contentsOf: Data([0xff, 0xfe]))
                    try handle.close()
                }()
                // The target waits for the image server: publish happens in `evacuated`.
                let error = await #expect(throws: TTRPCStatusError.self) {
                    try await target.restore(
                        NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-fffff"), migrationInfo: info(targetID)),
                        timeout: .seconds(30)
                    )
                }
                try await evacuated
                // Either the target noticed the mismatch itself, or the source refused the stale digest.
                print("corrupted archive, the target's shim sees: \(error.map { "\($0)" } ?? "-")")
                #expect(error?.code == .unavailable || error?.code == .dataLoss)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-eeeee") == "Failed" })
                #expect(!FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: targetID)))
                #expect(
                    await eventuallyAsync {
                        !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                    }
                )
                await source.close()
                await target.close()
            }
        }
    }

    @Test func sourceManagerRestarted_beforeTheKill_migrationCompletes() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-ggggg", node: "node-a", containerID: sourceID)
            )
            let managerB = try b.manager(double, servers: .seconds(20))
            let payload = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try await withManager(managerB) { _ in
                // The first life of node-a's manager: the Migration is created and claimed; then
                // the manager stops (an upgrade, a crash) before the source's shim is told to stop.
                try await withManager(try a.manager(double)) { first in
                    #expect(await eventuallyAsync { first.nodeServiceAddress.withLock { $0 } != nil })
                    #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-ggggg").status == 200)
                    #expect(await eventuallyAsync { phase(double, "web-5d9c-ggggg") == "Pending" })
                    var replacement = migratingPod("web-5d9c-hhhhh", node: "node-b", containerID: targetID)
                    replacement["status"] = ["phase": "Pending"]
                    try double.create("pods", namespace: "default", replacement)
                    #expect(
                        await eventuallyAsync {
                            double.object("migrations", namespace: "default", name: "web-5d9c-ggggg")?[path: [
                                "spec", "targetPod",
                            ]]?.stringValue == "web-5d9c-hhhhh"
                        }
                    )
                }
                // The second life picks the Migration up from the API server and creates no second one.
                let creates = double.requests.filter { $0.verb == "POST" && $0.path.hasSuffix("/migrations") }.count
                try await withManager(try a.manager(double)) { second in
                    #expect(await eventuallyAsync { second.nodeServiceAddress.withLock { $0 } != nil })
                    let source = try await a.client()
                    let target = try await b.client()
                    async let evacuated: NodeAPI.EvacResponse = {
                        let prepared = try await source.prepareEvac(
                            NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-ggggg"), migrationInfo: info(sourceID)),
                            timeout: .seconds(30)
                        )
                        #expect(prepared.outcome == .claimed)
                        try FileManager.default.createDirectory(
                            atPath: a.layout.migrationDirectory(containerID: sourceID),
                            withIntermediateDirectories: true
                        )
                        FileManager.default.createFile(
                            atPath: a.layout.migrationArchive(containerID: sourceID),
                            contents: Data(payload)
                        )
                        return try await source.evac(
                            NodeAPI.EvacRequest(
                                podInfo: podInfo("web-5d9c-ggggg"),
                                migrationInfo: info(sourceID, paused: true)
                            )
                        )
                    }()
                    let restored = try await target.restore(
                        NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-hhhhh"), migrationInfo: info(targetID)),
                        timeout: .seconds(30)
                    )
                    #expect(try await evacuated.outcome == .claimed)
                    #expect(restored.migrationInfo?.imageID == targetID)
                    #expect(
                        FileManager.default.contents(atPath: b.layout.migrationArchive(containerID: targetID))
                            == Data(payload)
                    )
                    _ = try await target.finishRestore(
                        NodeAPI.RestoreRequest(
                            podInfo: podInfo("web-5d9c-hhhhh"),
                            migrationInfo: info(targetID, uid: restored.migrationInfo?.migrationUID ?? "")
                        )
                    )
                    #expect(await eventuallyAsync { phase(double, "web-5d9c-ggggg") == "Completed" })
                    #expect(
                        await eventuallyAsync {
                            !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                        }
                    )
                    #expect(!FileManager.default.fileExists(atPath: b.layout.migrationArchive(containerID: targetID)))
                    await source.close()
                    await target.close()
                }
                let createsAfter = double.requests.filter { $0.verb == "POST" && $0.path.hasSuffix("/migrations") }
                    .count
                #expect(createsAfter - creates <= 1, "a restarted manager may try once and find its own Migration")
                #expect(double.objects("migrations").count == 1)
            }
        }
    }

    @Test func targetManagerStoppedMidTransfer_failsTheMigration_andLeavesNothing() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-iiiii", node: "node-a", containerID: sourceID)
            )
            // 256 MiB: the transfer takes long enough to stop node-b's manager in the middle of it.
            let size = 256 << 20
            try await withManager(try a.manager(double)) { managerA in
                #expect(await eventuallyAsync { managerA.nodeServiceAddress.withLock { $0 } != nil })
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-iiiii").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-iiiii") == "Pending" })
                var replacement = migratingPod("web-5d9c-jjjjj", node: "node-b", containerID: targetID)
                replacement["status"] = ["phase": "Pending"]
                try double.create("pods", namespace: "default", replacement)
                let partial = b.layout.migrationArchive(containerID: targetID) + ".partial"
                let shimSaw = Shared<String?>(nil)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // node-b's first life: it claims, its shim's Restore pulls; the manager stops
                    // once part of the image arrived.
                    group.addTask {
                        try await withManager(try b.manager(double, servers: .seconds(20))) { managerB in
                            #expect(await eventuallyAsync { managerB.nodeServiceAddress.withLock { $0 } != nil })
                            #expect(
                                await eventuallyAsync(within: 60) {
                                    ((try? FileManager.default.attributesOfItem(atPath: partial))?[.size] as? Int ?? 0)
                                        > 0
                                }
                            )
                        }
                    }
                    // node-b's shim.
                    group.addTask {
                        #expect(await eventuallyAsync { FileManager.default.fileExists(atPath: b.layout.nodeSocket) })
                        let target = try await b.client()
                        do {
                            _ = try await target.restore(
                                NodeAPI.RestoreRequest(
                                    podInfo: podInfo("web-5d9c-jjjjj"),
                                    migrationInfo: info(targetID)
                                ),
                                timeout: .seconds(60)
                            )
                            Issue.record("the restore finished although its manager stopped")
                        } catch {
                            shimSaw.set("\(error)")
                        }
                        await target.close()
                    }
                    // node-a's shim.
                    group.addTask {
                        let source = try await a.client()
                        let prepared = try await source.prepareEvac(
                            NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-iiiii"), migrationInfo: info(sourceID)),
                            timeout: .seconds(60)
                        )
                        #expect(prepared.outcome == .claimed)
                        try FileManager.default.createDirectory(
                            atPath: a.layout.migrationDirectory(containerID: sourceID),
                            withIntermediateDirectories: true
                        )
                        let archive = a.layout.migrationArchive(containerID: sourceID)
                        FileManager.default.createFile(atPath: archive, contents: nil)
                        let handle = try #require(FileHandle(forWritingAtPath: archive))
                        let block = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) })
                        for _ in 0..<(size >> 20) { try handle.write(contentsOf: block) }
                        try handle.close()
                        _ = try await source.evac(
                            NodeAPI.EvacRequest(
                                podInfo: podInfo("web-5d9c-iiiii"),
                                migrationInfo: info(sourceID, paused: true)
                            )
                        )
                        await source.close()
                    }
                    try await group.waitForAll()
                }
                print("target manager stopped mid-transfer, the target's shim sees: \(shimSaw.get() ?? "-")")
                #expect(shimSaw.get() != nil)
                // node-b's second life: the restore it no longer serves fails; its partial file goes.
                try await withManager(try b.manager(double)) { _ in
                    #expect(await eventuallyAsync(within: 30) { phase(double, "web-5d9c-iiiii") == "Failed" })
                    #expect(!FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: targetID)))
                    // The Migration is final: the source removes its image.
                    #expect(
                        await eventuallyAsync {
                            !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                        }
                    )
                }
                let message = double.object("migrations", namespace: "default", name: "web-5d9c-iiiii")?[path: [
                    "status", "containers",
                ]]?
                .arrayValue?.first?[path: ["condition", "message"]]?.stringValue
                print("target manager stopped mid-transfer, the Migration says: \(message ?? "-")")
                // Either the stopping manager still wrote why its pull ended, or its next life did.
                #expect(
                    message?.contains("manager stopped during the restore") == true
                        || message?.contains("pulling the image") == true
                )
            }
        }
    }

    @Test func peerOfAnotherCA_failsTheMigration_withTheTLSError() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-kkkkk", node: "node-a", containerID: sourceID)
            )
            // node-b's manager reads another Secret: a CA of another cluster.
            let managerA = try a.manager(double)
            let managerB = try b.manager(double, caSecret: CASecret(name: "other-cluster-ca"))
            try await withManagers(managerA, managerB) {
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-kkkkk").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-kkkkk") == "Pending" })
                var replacement = migratingPod("web-5d9c-lllll", node: "node-b", containerID: targetID)
                replacement["status"] = ["phase": "Pending"]
                try double.create("pods", namespace: "default", replacement)
                let source = try await a.client()
                let target = try await b.client()
                async let evacuated: Void = {
                    _ = try await source.prepareEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo("web-5d9c-kkkkk"), migrationInfo: info(sourceID)),
                        timeout: .seconds(30)
                    )
                    try FileManager.default.createDirectory(
                        atPath: a.layout.migrationDirectory(containerID: sourceID),
                        withIntermediateDirectories: true
                    )
                    FileManager.default.createFile(
                        atPath: a.layout.migrationArchive(containerID: sourceID),
                        contents: Data(repeating: 1, count: 1 << 20)
                    )
                    _ = try await source.evac(
                        NodeAPI.EvacRequest(
                            podInfo: podInfo("web-5d9c-kkkkk"),
                            migrationInfo: info(sourceID, paused: true)
                        )
                    )
                }()
                let error = await #expect(throws: TTRPCStatusError.self) {
                    try await target.restore(
                        NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-lllll"), migrationInfo: info(targetID)),
                        timeout: .seconds(60)
                    )
                }
                try await evacuated
                print("peer of another CA, the target's shim sees: \(error.map { "\($0)" } ?? "-")")
                #expect(error?.code == .unavailable)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-kkkkk") == "Failed" })
                let message =
                    double.object("migrations", namespace: "default", name: "web-5d9c-kkkkk")?[path: [
                        "status", "containers",
                    ]]?
                    .arrayValue?.first?[path: ["condition", "message"]]?.stringValue ?? ""
                print("peer of another CA, the Migration says: \(message)")
                #expect(message.contains("CERTIFICATE_VERIFY_FAILED"))
                #expect(!FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: targetID)))
                #expect(
                    await eventuallyAsync {
                        !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                    }
                )
                await source.close()
                await target.close()
            }
        }
    }

    @Test func sourcePodGoneWithoutImage_failsTheMigration() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod("web-5d9c-mmmmm", node: "node-a", containerID: sourceID)
            )
            try await withManagers(try a.manager(double), try b.manager(double)) {
                #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/web-5d9c-mmmmm").status == 200)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-mmmmm") == "Pending" })
                // The pod goes without its shim handing anything over (a forced deletion).
                #expect(
                    double.call(
                        "DELETE",
                        "/api/v1/namespaces/default/pods/web-5d9c-mmmmm",
                        query: ["gracePeriodSeconds": "0"]
                    ).status == 200
                )
                #expect(double.object("pods", namespace: "default", name: "web-5d9c-mmmmm") == nil)
                #expect(await eventuallyAsync { phase(double, "web-5d9c-mmmmm") == "Failed" })
                let message = double.object("migrations", namespace: "default", name: "web-5d9c-mmmmm")?[path: [
                    "status", "containers",
                ]]?
                .arrayValue?.first?[path: ["condition", "message"]]?.stringValue
                #expect(message == "the source container stopped without handing its image over")
            }
        }
    }
}
