import Foundation
import NIOPosix
import Testing
import ZPAPI
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// The status service of a real shim started by a real containerd: socket under the node's
/// configured `run-dir` (not the default one), the container's names from CRI annotations, phase
/// and pid from Create/Start, the `zeropod status` command, removal on delete and the socket gone
/// when the shim exits.
@Suite(.serialized) struct StatusEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func shimStatusSocket_listsTheContainer_streamsItsRemoval_andGoesAwayWithTheShim(
        flavor: ContainerdFlavor
    ) async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        // A run-dir of the test's own, handed to the shims in their node settings.
        let scratch = "/tmp/zpst-\(UUID().uuidString.prefix(8))"
        let runDirectory = scratch + "/run"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try Data("run-dir = \(runDirectory)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/node.conf"))
        let layout = NodeLayout(runDirectory: runDirectory)
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "st",
            environment: ["ZEROPOD_NODE_CONFIG": scratch + "/node.conf"]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-st")
        defer { netns.delete() }
        let id = "st1"
        let r = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2",
            "--annotation", "io.kubernetes.cri.container-name=web", "--annotation",
            "io.kubernetes.cri.sandbox-name=pod-s1",
            "--annotation", "io.kubernetes.cri.sandbox-namespace=ns1", "--annotation",
            "io.kubernetes.cri.sandbox-uid=uid-s1",
            "--with-ns", "network:\(netns.path)", "--rootfs", rootfs, id, "/bin/httpd", "-f", "-p", "8080", "-h",
            "/www",
        ])
        try #require(r.status == 0, "ctr run: \(r.stderr)")
        var removed = false
        defer {
            if !removed {
                _ = try? containerd.ctr(["task", "kill", "-s", "SIGKILL", id])
                _ = eventually { (try? containerd.ctr(["task", "rm", id]).status == 0) ?? false }
                _ = try? containerd.ctr(["c", "rm", id])
            }
        }
        let shimSocket = containerd.shimSocket(group: id)
        let path = layout.statusSocket(forShimSocket: shimSocket)
        #expect(path == runDirectory + "/s/" + (shimSocket.split(separator: "/").last.map(String.init) ?? "") + ".sock")
        #expect(eventually { FileManager.default.fileExists(atPath: path) }, "no status socket at \(path)")
        #expect(
            !FileManager.default.fileExists(atPath: NodeLayout().statusSocket(forShimSocket: shimSocket)),
            "the shim ignored run-dir: its status socket is in the default folder"
        )
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600, "status socket must be owner-only")
        #expect(
            stat(layout.statusSocketDirectory, &st) == 0 && st.st_mode & 0o777 == 0o700,
            "status folder must be 0700"
        )

        let group = MultiThreadedEventLoopGroup.singleton
        let client = try await ShimStatusClient.connect(socketPath: path, group: group)
        let status = try await client.status(id: id)
        #expect(
            status.name == "web" && status.podName == "pod-s1" && status.podNamespace == "ns1"
                && status.podUID == "uid-s1"
        )
        #expect(status.lifecyclePhase == .running && status.phase == .running)
        #expect(status.pid > 0 && isAlive(status.pid), "pid \(status.pid)")
        #expect(try await client.list().map(\.id) == [id])
        let metrics = try await client.metrics()
        #expect(
            metrics.first?.running == true
                && metrics.first?.checkpointDuration.upperBounds == StatusAPI.durationBucketBounds
        )

        // `zeropod status` finds the socket in the run-dir (the same node settings as the shim's,
        // or --run-dir) and reads it.
        let zeropod = TestPaths.buildDirectory + "/zeropod"
        let text = try await runOffThePool(
            ["/usr/bin/env", "ZEROPOD_NODE_CONFIG=\(scratch)/node.conf", zeropod, "status"],
            timeout: 30
        )
        #expect(text.status == 0, "status: \(text.stderr)")
        #expect(
            text.stdout.hasPrefix("\(id) pod=ns1/pod-s1 container=web phase=RUNNING lifecycle=RUNNING"),
            "\(text.stdout)"
        )
        #expect(text.stdout.contains("pid=\(status.pid) "))
        let byRunDir = try await runOffThePool([zeropod, "status", "--run-dir", runDirectory, "--id", id], timeout: 30)
        #expect(byRunDir.status == 0 && byRunDir.stdout == text.stdout, "\(byRunDir.stdout) \(byRunDir.stderr)")
        let prom = try await runOffThePool([zeropod, "status", "--metrics", "--socket", path], timeout: 30)
        #expect(
            prom.stdout.contains(#"zeropod_running{container="web",pod="pod-s1",namespace="ns1"} 1"#),
            "\(prom.stdout.prefix(400))"
        )
        let missing = try await runOffThePool([zeropod, "status", "--socket", path, "--id", "nope"], timeout: 30)
        #expect(missing.status == 1 && missing.stderr.contains("nope"), "\(missing.stderr)")
        // The shim binary points to the new command.
        let moved = try await runOffThePool(
            [TestPaths.buildDirectory + "/containerd-shim-zeropod-v2", "status"],
            timeout: 30
        )
        #expect(moved.status == 2 && moved.stderr.contains("zeropod status"), "\(moved.stderr)")

        // `zeropod status --watch` follows the stream until the shim ends it.
        let watchOutput = containerd.directory + "/watch.out"
        _ = FileManager.default.createFile(atPath: watchOutput, contents: nil)
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        watch.arguments = ["-k", "5", "120", zeropod, "status", "--watch", "--socket", path]
        watch.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: watchOutput))
        watch.standardError = FileHandle.nullDevice
        watch.standardInput = FileHandle.nullDevice
        try watch.run()
        let watchText = { (try? String(contentsOfFile: watchOutput, encoding: .utf8)) ?? "" }
        #expect(eventually { watchText().hasPrefix("snapshot | \(id) ") }, "status --watch printed: \(watchText())")

        // A subscriber sees the removal; the shim then exits and takes its status socket along.
        let watcher = try await ShimStatusClient.connect(socketPath: path, group: group)
        let (subscribed, subscribedContinuation) = AsyncStream.makeStream(of: Void.self)
        let shimPid = processes(matching: ["containerd-shim-zeropod-v2", "-socket", shimSocket]).first
        let saw = await withTaskGroup(of: Bool?.self) { tasks in
            tasks.addTask {
                do {
                    for try await change in watcher.subscribe(initialSnapshot: true) {
                        if change.snapshot { subscribedContinuation.yield() }
                        if change.removed && change.status.id == id { return true }
                    }
                } catch {
                    // The connection closed (shim gone, or the deadline below) before a removal came.
                }
                subscribedContinuation.yield()
                return false
            }
            for await _ in subscribed { break }
            #expect((try? containerd.ctr(["task", "kill", "-s", "SIGKILL", id]).status) == 0)
            #expect(eventually { (try? containerd.ctr(["task", "rm", id]).status == 0) ?? false })
            #expect((try? containerd.ctr(["c", "rm", id]).status) == 0)
            tasks.addTask {
                try? await Task.sleep(for: .seconds(90))
                await watcher.close()
                return nil
            }
            while let result = await tasks.next() {
                if let result {
                    tasks.cancelAll()
                    return result
                }
            }
            return false
        }
        removed = true
        #expect(saw, "no removal change for \(id)")
        await watcher.close()
        await client.close()
        if let shimPid { #expect(eventually { !isAlive(shimPid) }) }
        #expect(eventually { !watch.isRunning }, "status --watch did not end with the shim")
        if watch.isRunning { watch.terminate() }
        watch.waitUntilExit()
        let lines = watchText().split(separator: "\n")
        #expect(
            lines.contains { $0.hasPrefix("#") && $0.contains(" removed | \(id) ") },
            "status --watch printed: \(lines)"
        )
        #expect(eventually { !FileManager.default.fileExists(atPath: path) }, "status socket left behind: \(path)")
    }
}
