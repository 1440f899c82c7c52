import Foundation
import NIOCore
import NIOPosix
import Testing
import ZPAPI
import ZPCore
import ZPKube
import ZPManager
import ZPTTRPC
import ZPTestSupport

@testable import KubeAPIDouble

#if canImport(Glibc)
import Glibc
#endif

// The shims' reports that end a Migration, and what a manager's previous life left (decisions
// 0064, 0065): a live source's AbortEvac at its pages-transfer-timeout, FinishRestore refused
// unless it is about the current attempt, a restarted manager's sweep of the target side's page
// sockets and of archives no Migration claims. Two managers in one process as in MigrationTests.

/// A unix socket listening at `path` (a shim's page relay), closed by the caller.
private func listeningUnixSocket(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    try #require(bound == 0, "bind \(path): errno \(errno)")
    try #require(listen(fd, 4) == 0)
    return fd
}

/// Whether a connection to `host:port` (IPv4) is accepted.
private func tcpAccepts(_ host: String, _ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr(host)
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// Whether a client is waiting in the accept queue of listening socket `fd` (non-blocking accept).
private func someoneConnected(_ fd: Int32) -> Bool {
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    let accepted = accept(fd, nil, nil)
    guard accepted >= 0 else { return false }
    close(accepted)
    return true
}

private func migrationUID(_ double: KubeAPIDouble, _ name: String) -> String? {
    double.object("migrations", namespace: "default", name: name)?[path: ["metadata", "uid"]]?.stringValue
}

private func message(_ double: KubeAPIDouble, _ name: String) -> String? {
    double.object("migrations", namespace: "default", name: name)?[path: ["status", "containers"]]?.arrayValue?
        .first?[path: ["condition", "message"]]?.stringValue
}

@Suite(.serialized) struct MigrationReportTests {
    /// Deletes `source` on node-a, creates its replacement `target` on node-b and waits for the claim.
    private func claimed(_ double: KubeAPIDouble, source: String, target: String, live: Bool) async throws {
        let annotations = live ? ["zeropod.ctrox.dev/live-migrate": "web"] : ["zeropod.ctrox.dev/migrate": "web"]
        #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/\(source)").status == 200)
        #expect(await eventuallyAsync { phase(double, source) == "Pending" })
        var replacement = migratingPod(target, node: "node-b", containerID: targetID, annotations: annotations)
        replacement["status"] = ["phase": "Pending"]
        try double.create("pods", namespace: "default", replacement)
        try #require(
            await eventuallyAsync {
                double.object("migrations", namespace: "default", name: source)?[path: ["spec", "targetPod"]]?
                    .stringValue == target
            }
        )
    }

    /// A live source whose dump ended at its pages-transfer-timeout tells its manager (AbortEvac):
    /// the Migration is Failed with the shim's reason at once and the source's page proxy is
    /// closed (a target dialling it is refused at once); the target's later FinishRestore cannot
    /// replace the reason, and it still closes the target's proxy and archive. Reports about
    /// another Migration, without a uid, or about a final one are refused.
    @Test func liveSourceAbort_failsAtOnce_closesThePageProxy_andRefusesStaleReports() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        let name = "web-5d9c-kkkkk"
        try await withMigrationDouble { double in
            try double.create(
                "pods",
                namespace: "default",
                migratingPod(
                    name,
                    node: "node-a",
                    containerID: sourceID,
                    annotations: ["zeropod.ctrox.dev/live-migrate": "web"]
                )
            )
            try await withManagers(try a.manager(double), try b.manager(double, servers: .seconds(20))) {
                try await claimed(double, source: name, target: "web-5d9c-lllll", live: true)
                let source = try await a.client()
                let target = try await b.client()
                // The source shim's page relay (its socket in node-a's run folder).
                try FileManager.default.createDirectory(
                    atPath: a.layout.pageSocketDirectory,
                    withIntermediateDirectories: true
                )
                let relay = try listeningUnixSocket(a.layout.pageSocket(containerID: sourceID))
                defer { close(relay) }
                let live = {
                    var m = info(sourceID, paused: true)
                    m.liveMigration = true
                    return m
                }()
                async let evacuated: NodeAPI.EvacResponse = {
                    let prepared = try await source.prepareEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: live),
                        timeout: .seconds(30)
                    )
                    #expect(prepared.outcome == .claimed, "\(prepared)")
                    try FileManager.default.createDirectory(
                        atPath: a.layout.migrationDirectory(containerID: sourceID),
                        withIntermediateDirectories: true
                    )
                    FileManager.default.createFile(
                        atPath: a.layout.migrationArchive(containerID: sourceID),
                        contents: Data(repeating: 7, count: 1 << 20)
                    )
                    return try await source.evac(NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: live))
                }()
                let restored = try await target.restore(
                    NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-lllll"), migrationInfo: info(targetID)),
                    timeout: .seconds(30)
                )
                let published = try await evacuated
                let uid = try #require(migrationUID(double, name))
                #expect(published.migrationUID == uid)
                #expect(restored.migrationInfo?.migrationUID == uid)
                #expect(restored.migrationInfo?.liveMigration == true)
                // The target side listens in its own folder (decision 0064).
                #expect(FileManager.default.fileExists(atPath: b.layout.targetPageSocket(containerID: targetID)))
                #expect(!FileManager.default.fileExists(atPath: b.layout.pageSocket(containerID: targetID)))
                let server = try #require(
                    double.object("migrations", namespace: "default", name: name)?[path: ["spec", "containers"]]?
                        .arrayValue?.first?[path: ["pageServer"]]
                )
                let port = Int(try #require(server[path: ["port"]]?.integerValue))
                #expect(tcpAccepts("127.0.0.2", port), "the source's page proxy is not listening on \(port)")
                #expect(phase(double, name) == "Running")

                var report = live
                report.failure = "the target did not take the pages within pages-transfer-timeout 15s"
                // Refused: no uid, another Migration's uid.
                let noUID = await #expect(throws: TTRPCStatusError.self) {
                    try await source.abortEvac(NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: report))
                }
                #expect(noUID?.code == .invalidArgument)
                report.migrationUID = "00000000-0000-0000-0000-000000000000"
                let otherUID = await #expect(throws: TTRPCStatusError.self) {
                    try await source.abortEvac(NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: report))
                }
                #expect(otherUID?.code == .failedPrecondition, "\(String(describing: otherUID))")
                // Refused: another container than the one whose image was published.
                var otherContainer = report
                otherContainer.imageID = String(repeating: "c3", count: 32)
                otherContainer.migrationUID = uid
                let wrongContainer = await #expect(throws: TTRPCStatusError.self) {
                    try await source.abortEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: otherContainer)
                    )
                }
                #expect(wrongContainer?.code == .failedPrecondition)
                #expect(phase(double, name) == "Running")
                #expect(tcpAccepts("127.0.0.2", port))

                // The report of the current attempt.
                report.migrationUID = uid
                let started = ContinuousClock.now
                let answer = try await source.abortEvac(
                    NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: report)
                )
                #expect(answer.outcome == .failed)
                #expect(phase(double, name) == "Failed")
                #expect(
                    message(double, name)?.contains("pages-transfer-timeout 15s") == true,
                    "\(message(double, name) ?? "-")"
                )
                #expect(
                    await eventuallyAsync(within: 5) { !tcpAccepts("127.0.0.2", port) },
                    "the page proxy still listens"
                )
                print("AbortEvac: Migration Failed and the page proxy closed within \(ContinuousClock.now - started)")
                // The same report again: the phase is final.
                let again = await #expect(throws: TTRPCStatusError.self) {
                    try await source.abortEvac(NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: report))
                }
                #expect(again?.code == .failedPrecondition)

                // The target started from scratch and reports so: the reason stays the source's,
                // and its page proxy, socket and archive go.
                var finished = info(targetID, uid: uid)
                finished.failure = "the live restore at the target failed: criu lazy-pages ended during the restore"
                let late = await #expect(throws: TTRPCStatusError.self) {
                    try await target.finishRestore(
                        NodeAPI.RestoreRequest(podInfo: podInfo("web-5d9c-lllll"), migrationInfo: finished)
                    )
                }
                #expect(late?.code == .failedPrecondition)
                #expect(late?.message.contains("already Failed") == true, "\(String(describing: late))")
                #expect(message(double, name)?.contains("pages-transfer-timeout 15s") == true)
                #expect(
                    await eventuallyAsync(within: 5) {
                        !FileManager.default.fileExists(atPath: b.layout.targetPageSocket(containerID: targetID))
                    }
                )
                #expect(!FileManager.default.fileExists(atPath: b.layout.migrationArchive(containerID: targetID)))
                // The Migration is final: the source removes its image.
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

    /// FinishRestore moves the container only when it is about the current attempt: the uid of
    /// the Restore answer, the restore this manager serves, a phase not final yet. A report
    /// without a uid, with another uid, about another target container, or after the container
    /// is Completed is refused and changes nothing (a late failure never turns Completed into Failed).
    @Test func staleFinishRestore_isRefused_andChangesNothing() async throws {
        let a = MigrationNode(name: "node-a", ip: "127.0.0.2", run: try RunDirectory())
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer {
            a.run.remove()
            b.run.remove()
        }
        let name = "web-5d9c-mmmmm"
        let targetPod = "web-5d9c-nnnnn"
        try await withMigrationDouble { double in
            try double.create("pods", namespace: "default", migratingPod(name, node: "node-a", containerID: sourceID))
            try await withManagers(try a.manager(double), try b.manager(double, servers: .seconds(20))) {
                try await claimed(double, source: name, target: targetPod, live: false)
                let source = try await a.client()
                let target = try await b.client()
                async let evacuated: NodeAPI.EvacResponse = {
                    _ = try await source.prepareEvac(
                        NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: info(sourceID)),
                        timeout: .seconds(30)
                    )
                    try FileManager.default.createDirectory(
                        atPath: a.layout.migrationDirectory(containerID: sourceID),
                        withIntermediateDirectories: true
                    )
                    FileManager.default.createFile(
                        atPath: a.layout.migrationArchive(containerID: sourceID),
                        contents: Data(repeating: 3, count: 1 << 20)
                    )
                    return try await source.evac(
                        NodeAPI.EvacRequest(podInfo: podInfo(name), migrationInfo: info(sourceID, paused: true))
                    )
                }()
                let restored = try await target.restore(
                    NodeAPI.RestoreRequest(podInfo: podInfo(targetPod), migrationInfo: info(targetID)),
                    timeout: .seconds(30)
                )
                _ = try await evacuated
                let uid = try #require(restored.migrationInfo?.migrationUID)
                #expect(uid == migrationUID(double, name))
                #expect(phase(double, name) == "Running")
                func finish(_ id: String, uid: String, failure: String = "") async -> TTRPCStatusError? {
                    var m = info(id, uid: uid)
                    m.failure = failure
                    return await #expect(throws: TTRPCStatusError.self) {
                        try await target.finishRestore(
                            NodeAPI.RestoreRequest(podInfo: podInfo(targetPod), migrationInfo: m)
                        )
                    }
                }
                let failure = "restore at the target failed: an earlier attempt"
                #expect(await finish(targetID, uid: "", failure: failure)?.code == .invalidArgument)
                let otherUID = await finish(targetID, uid: "11111111-2222-3333-4444-555555555555", failure: failure)
                #expect(otherUID?.code == .failedPrecondition)
                let otherContainer = await finish(String(repeating: "e7", count: 32), uid: uid, failure: failure)
                #expect(otherContainer?.code == .failedPrecondition)
                #expect(
                    otherContainer?.message.contains("serves no restore") == true,
                    "\(String(describing: otherContainer))"
                )
                #expect(phase(double, name) == "Running", "a refused report changed the phase")
                // The current report completes it.
                _ = try await target.finishRestore(
                    NodeAPI.RestoreRequest(podInfo: podInfo(targetPod), migrationInfo: info(targetID, uid: uid))
                )
                #expect(phase(double, name) == "Completed")
                // A late failure report of the same container: refused, still Completed.
                let late = await finish(targetID, uid: uid, failure: failure)
                #expect(late?.code == .failedPrecondition)
                #expect(phase(double, name) == "Completed")
                await source.close()
                await target.close()
            }
        }
    }

    /// A manager that starts removes what a previous life left that no live migration claims:
    /// every target-side page socket (`<run-dir>/t`, only managers listen there) and the
    /// migration folders no unfinished Migration of this node names; it never touches the source
    /// side's sockets (`<run-dir>/p`, the shims': not even a connect) nor a claimed source image.
    @Test func restartedManager_removesDeadTargetSocketsAndUnclaimedArchives_keepsTheRest() async throws {
        let b = MigrationNode(name: "node-b", ip: "127.0.0.3", run: try RunDirectory())
        defer { b.run.remove() }
        let deadTarget = String(repeating: "d1", count: 32)
        let liveSource = String(repeating: "d2", count: 32)
        let orphan = String(repeating: "d3", count: 32)
        let claimedSource = String(repeating: "d4", count: 32)
        try await withMigrationDouble { double in
            // A Migration of node-b (as source), unfinished: its image stays.
            try double.create(
                "migrations",
                namespace: "default",
                [
                    "apiVersion": "runtime.zeropod.ctrox.dev/v1", "kind": "Migration",
                    "metadata": ["name": "web-5d9c-ooooo", "namespace": "default"],
                    "spec": [
                        "liveMigration": false, "restoreReady": false, "sourceNode": "node-b",
                        "sourcePod": "web-5d9c-ooooo", "podTemplateHash": "5d9c",
                        "containers": [["name": "web", "id": .string(claimedSource)]],
                    ],
                ]
            )
            // What a previous life left: the socket it bound for a restore it never answered
            // (SIGKILL: no cleanup), the archive it pulled for it; a live source's relay socket;
            // the claimed source's image.
            try FileManager.default.createDirectory(
                atPath: b.layout.targetPageSocketDirectory,
                withIntermediateDirectories: true
            )
            close(try listeningUnixSocket(b.layout.targetPageSocket(containerID: deadTarget)))
            try FileManager.default.createDirectory(
                atPath: b.layout.pageSocketDirectory,
                withIntermediateDirectories: true
            )
            let relay = try listeningUnixSocket(b.layout.pageSocket(containerID: liveSource))
            defer { close(relay) }
            for id in [deadTarget, orphan, claimedSource] {
                try FileManager.default.createDirectory(
                    atPath: b.layout.migrationDirectory(containerID: id),
                    withIntermediateDirectories: true
                )
                FileManager.default.createFile(atPath: b.layout.migrationArchive(containerID: id), contents: Data([1]))
            }
            try await withManager(try b.manager(double)) { manager in
                #expect(await eventuallyAsync { manager.nodeServiceAddress.withLock { $0 } != nil })
                #expect(
                    await eventuallyAsync {
                        !FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: deadTarget))
                            && !FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: orphan))
                    },
                    "left: \((try? FileManager.default.contentsOfDirectory(atPath: b.layout.migrationRoot)) ?? [])"
                )
                #expect(!FileManager.default.fileExists(atPath: b.layout.targetPageSocket(containerID: deadTarget)))
                #expect(FileManager.default.fileExists(atPath: b.layout.migrationArchive(containerID: claimedSource)))
                #expect(FileManager.default.fileExists(atPath: b.layout.pageSocket(containerID: liveSource)))
                #expect(!someoneConnected(relay), "the manager connected to a shim's page socket")
            }
        }
    }
}
