import Foundation
import Logging
import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPTTRPC
import ZPTestSupport

@testable import ZPShim

// Wake groups (docs/decisions/0011-wake-groups.md): messages, registry, the parallel wake of the
// other members, and end to end through a real containerd with real CRIU.

@Suite struct WakeGroupRegistryTests {
    @Test func registerListUnregister_removesEmptyFolders() throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "k8s.io", podNamespace: "blog", group: "wordpress")
        let other = WakeGroupKey(containerdNamespace: "k8s.io", podNamespace: "shop", group: "wordpress")
        try registry.register(WakeGroupEntry(containerID: "web", statusSocket: "/run/zeropod-swift/s/a.sock"), in: key)
        try registry.register(WakeGroupEntry(containerID: "db", statusSocket: "/run/zeropod-swift/s/b.sock"), in: key)
        try registry.register(
            WakeGroupEntry(containerID: "shop-db", statusSocket: "/run/zeropod-swift/s/c.sock"),
            in: other
        )
        #expect(registry.directory(of: key) == scratch.path + "/wake-groups/k8s.io/blog/wordpress")
        #expect(
            registry.members(of: key) == [
                WakeGroupEntry(containerID: "db", statusSocket: "/run/zeropod-swift/s/b.sock"),
                WakeGroupEntry(containerID: "web", statusSocket: "/run/zeropod-swift/s/a.sock"),
            ]
        )
        #expect(registry.members(of: other).map(\.containerID) == ["shop-db"])
        var st = stat()
        #expect(stat(registry.directory(of: key), &st) == 0 && st.st_mode & 0o777 == 0o700)
        #expect(stat(registry.directory(of: key) + "/web", &st) == 0 && st.st_mode & 0o777 == 0o600)

        // Re-registering replaces the entry (a shim that came back for the same id).
        try registry.register(WakeGroupEntry(containerID: "web", statusSocket: "/run/zeropod-swift/s/d.sock"), in: key)
        #expect(registry.members(of: key).last?.statusSocket == "/run/zeropod-swift/s/d.sock")

        registry.unregister(containerID: "web", in: key)
        #expect(registry.members(of: key).map(\.containerID) == ["db"])
        registry.unregister(containerID: "db", in: key)
        registry.unregister(containerID: "db", in: key)  // twice: no error
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/wake-groups/k8s.io/blog"))
        #expect(FileManager.default.fileExists(atPath: registry.directory(of: other) + "/shop-db"))
        registry.unregister(containerID: "shop-db", in: other)
        #expect(FileManager.default.fileExists(atPath: registry.root), "the root stays")
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/wake-groups/k8s.io"))
    }

    @Test func emptyPodNamespace_isItsOwnScope_andTornFilesAreSkipped() throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "default", podNamespace: "", group: "g")
        try registry.register(WakeGroupEntry(containerID: "a", statusSocket: "/s/a.sock"), in: key)
        #expect(registry.directory(of: key) == scratch.path + "/wake-groups/default/_/g")
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: registry.directory(of: key) + "/torn"))
        try Data("status-socket=relative.sock\n".utf8).write(
            to: URL(fileURLWithPath: registry.directory(of: key) + "/relative")
        )
        try Data("x".utf8).write(to: URL(fileURLWithPath: registry.directory(of: key) + "/.b.tmp"))
        #expect(registry.members(of: key).map(\.containerID) == ["a"])
    }

    @Test func lostMember_isUnlistedFromItsBundleAnnotations() throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "k8s.io", podNamespace: "blog", group: "wordpress")
        try registry.register(WakeGroupEntry(containerID: "web", statusSocket: "/s/a.sock"), in: key)
        try registry.register(WakeGroupEntry(containerID: "db", statusSocket: "/s/b.sock"), in: key)
        let annotations = ["zeropod-swift/wake-group": "wordpress", CRIAnnotation.sandboxNamespace: "blog"]
        registry.unlistLostMember(containerID: "web", containerdNamespace: "other", annotations: annotations)  // other scope
        registry.unlistLostMember(containerID: "web", containerdNamespace: "k8s.io", annotations: [:])  // no group
        registry.unlistLostMember(
            containerID: "web",
            containerdNamespace: "k8s.io",
            annotations: ["zeropod-swift/wake-group": "Bad!", CRIAnnotation.sandboxNamespace: "blog"]
        )
        #expect(registry.members(of: key).map(\.containerID) == ["db", "web"])
        registry.unlistLostMember(containerID: "web", containerdNamespace: "k8s.io", annotations: annotations)
        #expect(registry.members(of: key).map(\.containerID) == ["db"])
    }

    @Test func namesThatCannotBePathComponents_areRefusedWithTheName() throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "ns", podNamespace: "", group: "g")
        for (id, reason) in [
            ("..", "is .."), ("a/b", "contains \"/\" or NUL"), (".hidden", "starts with \".\""), ("", "is empty"),
        ] {
            #expect { try registry.register(WakeGroupEntry(containerID: id, statusSocket: "/s"), in: key) } throws: {
                error in
                "\(error)" == "wake group ns/_/g: container id \"\(id)\" \(reason)"
            }
        }
        #expect(!FileManager.default.fileExists(atPath: registry.root))
    }
}

@Suite struct WakeGroupMemberTests {
    /// Serves a status service whose `Wake` runs `wake`, at `<scratch>/s/<name>.sock`, for `body`.
    static func withWakeService(
        at path: String,
        wake: @escaping @Sendable (StatusAPI.WakeRequest) async throws -> StatusAPI.WakeResponse,
        _ body: @Sendable () async throws -> Void
    ) async throws {
        let service = ShimStatusService(board: ShimStatusBoard(), wake: wake)
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await service.run(
                    socketPath: path,
                    group: MultiThreadedEventLoopGroup.singleton,
                    logger: Logger(label: "test")
                ) {
                    readyContinuation.yield()
                }
            }
            for await _ in ready { break }
            do {
                try await body()
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
            try? await group.waitForAll()
        }
    }

    /// Two peers whose `Wake` handlers each wait until BOTH were entered: a member that called them
    /// one after the other would leave the first waiting for the second until its deadline. A third
    /// entry names a socket nobody serves (a stale entry): it is skipped and does not hold the rest.
    @Test func wakePeers_callsEveryOtherMemberInParallel_andSkipsStaleEntries() async throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "ns", podNamespace: "", group: "wordpress")
        let sockets = (scratch.path + "/s/one.sock", scratch.path + "/s/two.sock")
        try registry.register(WakeGroupEntry(containerID: "web", statusSocket: scratch.path + "/s/web.sock"), in: key)
        try registry.register(WakeGroupEntry(containerID: "db", statusSocket: sockets.0), in: key)
        try registry.register(WakeGroupEntry(containerID: "cache", statusSocket: sockets.1), in: key)
        try registry.register(WakeGroupEntry(containerID: "gone", statusSocket: scratch.path + "/s/gone.sock"), in: key)

        let entered = Mutex<[String]>([])
        let sawBoth = Mutex<[String: Bool]>([:])
        let handler: @Sendable (StatusAPI.WakeRequest) async throws -> StatusAPI.WakeResponse = { request in
            entered.withLock { $0.append("\(request.id) from \(request.origin)") }
            let deadline = ContinuousClock.now + .seconds(20)
            while entered.withLock({ $0.count }) < 2 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            sawBoth.withLock { $0[request.id] = entered.withLock { $0.count } >= 2 }
            return StatusAPI.WakeResponse(outcome: .woken, lifecyclePhase: .running)
        }
        let member = WakeGroupMember(
            key: key,
            entry: WakeGroupEntry(containerID: "web", statusSocket: scratch.path + "/s/web.sock"),
            registry: registry,
            group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test")
        )
        try await Self.withWakeService(at: sockets.0, wake: handler) {
            try await Self.withWakeService(at: sockets.1, wake: handler) {
                await member.wakePeers()
            }
        }
        #expect(entered.withLock { $0.sorted() } == ["cache from wordpress/web", "db from wordpress/web"])
        #expect(sawBoth.withLock { $0 } == ["cache": true, "db": true], "the two wakes must overlap in time")
    }

    @Test func run_listsTheMember_andLeaveRemovesIt_evenBeforeRun() async throws {
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        let registry = WakeGroupRegistry(runDirectory: scratch.path)
        let key = WakeGroupKey(containerdNamespace: "ns", podNamespace: "p", group: "g")
        func member(_ id: String) -> WakeGroupMember {
            WakeGroupMember(
                key: key,
                entry: WakeGroupEntry(containerID: id, statusSocket: "/s/\(id).sock"),
                registry: registry,
                group: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "test")
            )
        }
        let a = member("a")
        let b = member("b")
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await a.run() }
            #expect(await StatusBoardTests.poll { registry.members(of: key).map(\.containerID) == ["a"] })
            a.requestWake()  // no other member: nothing to call
            a.leave()
            await tasks.waitForAll()
        }
        #expect(registry.members(of: key).isEmpty)
        b.leave()
        await b.run()  // returns at once and lists nothing
        #expect(registry.members(of: key).isEmpty)
    }

    /// The shim's `Wake` for an id it does not serve: notFound, naming the id.
    @Test func taskServiceWake_unknownContainer_isNotFound() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let service = TaskService(
            namespace: "zpwake",
            publisher: EventPublisher(address: "", group: group, logger: Logger(label: "test")),
            group: group,
            logger: Logger(label: "test")
        )
        await #expect { _ = try await service.wake(StatusAPI.WakeRequest(id: "nope", origin: "g/x")) } throws: {
            error in
            let e = error as? TTRPCStatusError
            return e?.code == .notFound && (e?.message.contains("nope") ?? false)
        }
    }
}

/// End to end: three busybox counter servers, each in its own network namespace and shim (like
/// separate pods), two in wake group `wg`, one in `wg-other`. All scale down; ONE request to the
/// first brings the second back without any connection to it, while the third stays down; an
/// exec into the second, once both are down again, brings the first back; the registry lists the
/// members and forgets them on delete, and on containerd's `delete` after a lost shim.
@Suite(.serialized) struct WakeGroupEndToEndTests {
    @Test func oneConnection_wakesTheOtherMember_andDeleteUnlistsThem() throws {
        let flavor = ContainerdFlavor.all[1]  // 2.x, as the benchmark uses; the wake does not involve containerd
        let rootfs = try TestPaths.busyboxRootfs()
        let scratch = try TemporaryDirectory("zpwake")
        defer { scratch.remove() }
        try Data("run-dir = \(scratch.path)/run\n".utf8).write(to: URL(fileURLWithPath: scratch.path + "/node.conf"))
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "wake",
            environment: ["ZEROPOD_NODE_CONFIG": scratch.path + "/node.conf"]
        )
        defer { containerd.stop() }
        let netns = try (TestNetns("zpshim-wka"), TestNetns("zpshim-wkb"), TestNetns("zpshim-wkc"))
        defer {
            netns.0.delete()
            netns.1.delete()
            netns.2.delete()
        }
        let ids = ("wake-a", "wake-b", "wake-c")
        defer {
            removeTask(containerd, ids.0)
            removeTask(containerd, ids.1)
            removeTask(containerd, ids.2)
        }
        try startCounter(
            containerd,
            netns: netns.0,
            id: ids.0,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/wake-group=wg"]
        )
        try startCounter(
            containerd,
            netns: netns.1,
            id: ids.1,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/wake-group=wg"]
        )
        try startCounter(
            containerd,
            netns: netns.2,
            id: ids.2,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/wake-group=wg-other"]
        )

        let registry = WakeGroupRegistry(runDirectory: scratch.path + "/run")
        let group = WakeGroupKey(containerdNamespace: containerd.namespace, podNamespace: "", group: "wg")
        let otherGroup = WakeGroupKey(containerdNamespace: containerd.namespace, podNamespace: "", group: "wg-other")
        let listed = eventually(within: 30) { registry.members(of: group).map(\.containerID) == [ids.0, ids.1] }
        #expect(listed, "members of wg: \(registry.members(of: group))")
        let sockets = registry.members(of: group).map(\.statusSocket)
        #expect(sockets.count == 2 && Set(sockets).count == 2, "separate shims, separate status sockets: \(sockets)")
        #expect(sockets.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(registry.members(of: otherGroup).map(\.containerID) == [ids.2])

        // All three scale down (2 s idle).
        let down = eventually(within: 90) {
            containerd.logLines(containing: "checkpointing done").count >= 3
                && processes(inNetns: netns.0.path).isEmpty && processes(inNetns: netns.1.path).isEmpty
                && processes(inNetns: netns.2.path).isEmpty
        }
        try #require(down, "not all scaled down; log: \(containerd.log(tail: 40))")
        let restoresBefore = containerd.logLines(containing: "restored process:").count

        // One request to the first member; nothing connects to the second.
        #expect(netns.0.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 30))")
        let secondBack = eventually(within: 60) {
            containerd.logLines(containing: "restored process:").contains { $0.contains("container=\(ids.1)") }
        }
        #expect(secondBack, "the other member was not restored; log: \(containerd.log(tail: 40))")
        #expect(containerd.logLines(containing: "woken by wake group").contains { $0.contains("origin=wg/\(ids.0)") })
        // The origin logs the peer's answer after the peer logged its restore: wait for it.
        #expect(
            eventually(within: 30) {
                containerd.logLines(containing: "wake group member answered woken").contains {
                    $0.contains("peer=\(ids.1)")
                }
            },
            "log: \(containerd.log(tail: 40))"
        )
        // The third (another group) was not woken: no restore of it, and none of its processes.
        // (The origin's own "restored process" line may come after its answer: the handover
        // listeners close at CRIU's post-resume, before the shim records the restore.)
        var restores: [String] = []
        _ = eventually(within: 30) {
            restores = containerd.logLines(containing: "restored process:")
            return restores.count - restoresBefore >= 2
        }
        #expect(!restores.contains { $0.contains("container=\(ids.2)") }, "restores: \(restores)")
        #expect(processes(inNetns: netns.2.path).isEmpty)
        #expect(restores.count - restoresBefore == 2, "restores: \(restores)")
        for line in containerd.logLines(containing: "wake group") + containerd.logLines(containing: "restored process:")
        {
            if let range = line.range(of: "info ") ?? line.range(of: "warning ") {
                print("[zpwake-e2e] \(line[range.lowerBound...].prefix(230))")
            }
        }
        // The woken member kept its memory: its counter goes on from 1 (this request is its second).
        #expect(netns.1.httpGet(port: 8080) == "count=2\n")

        // An exec into a scaled-down member wakes the group too (here the other way round).
        let downAgain = eventually(within: 90) {
            processes(inNetns: netns.0.path).isEmpty && processes(inNetns: netns.1.path).isEmpty
                && containerd.logLines(containing: "checkpointing done").count >= 5
        }
        try #require(downAgain, "not scaled down again; log: \(containerd.log(tail: 40))")
        let exec = try containerd.ctr(["task", "exec", "--exec-id", "e1", ids.1, "/bin/true"])
        #expect(exec.status == 0, "exec: \(exec.stderr)")
        let firstBackByExec = eventually(within: 60) {
            containerd.logLines(containing: "woken by wake group").contains { $0.contains("origin=wg/\(ids.1)") }
                && containerd.logLines(containing: "restored process:").filter { $0.contains("container=\(ids.0)") }
                    .count >= 2
        }
        #expect(firstBackByExec, "the exec did not wake the other member; log: \(containerd.log(tail: 40))")
        #expect(!containerd.logLines(containing: "restored process:").contains { $0.contains("container=\(ids.2)") })

        // A lost shim: containerd runs our `delete` command for it, which unlists the member.
        let lostShim = try #require(
            processes(matching: ["containerd-shim-zeropod-v2", "-socket", containerd.shimSocket(group: ids.2)]).first
        )
        kill(lostShim, SIGKILL)
        #expect(eventually(within: 30) { registry.members(of: otherGroup).isEmpty }, "lost member still listed")
        #expect(registry.members(of: group).map(\.containerID) == [ids.0, ids.1])

        // Delete unlists: entries gone (and the group folders with them).
        for id in [ids.0, ids.1, ids.2] { removeTask(containerd, id) }
        let unlisted = eventually(within: 30) {
            registry.members(of: group).isEmpty && registry.members(of: otherGroup).isEmpty
                && !FileManager.default.fileExists(atPath: registry.root + "/" + containerd.namespace)
        }
        #expect(unlisted, "still listed: \(registry.members(of: group)) \(registry.members(of: otherGroup))")
    }
}
