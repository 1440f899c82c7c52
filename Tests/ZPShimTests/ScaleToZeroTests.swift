import Foundation
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// A shell loop that keeps a request counter in its own memory and serves it over HTTP with
/// busybox nc: the counter survives a checkpoint/restore only if the process memory does.
let counterServer = """
    n=0; while true; do n=$((n+1)); echo "served-$n"; \
    printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\ncount=%d\\n' $((7+${#n})) $n | nc -l -p 8080 >/dev/null; done
    """

/// The HTTP status code of a GET with user agent `agent` from inside the namespace, or nil.
func httpStatus(_ netns: TestNetns, port: Int, agent: String) -> Int? {
    guard
        let r = try? run(
            [
                "ip", "netns", "exec", netns.name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-A", agent,
                "--max-time", "5", "http://127.0.0.1:\(port)/",
            ],
            timeout: 15
        ), r.status == 0
    else { return nil }
    return Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// The first field (pid) and the status of `id` in `ctr task ls`.
func taskRow(_ containerd: PrivateContainerd, _ id: String) -> (pid: Int32, status: String)? {
    guard let list = try? containerd.ctr(["task", "ls"]).stdout,
        let row = list.split(separator: "\n").first(where: { $0.hasPrefix(id + " ") })
    else { return nil }
    let fields = row.split(separator: " ", omittingEmptySubsequences: true)
    guard fields.count >= 3, let pid = Int32(fields[1]) else { return nil }
    return (pid, String(fields[fields.count - 1]))
}

/// Starts the busybox counter server `id` with a 2 s scale-down duration and waits for count=1
/// (`within` seconds: an app that first fills hundreds of MiB of memory needs longer).
func startCounter(
    _ containerd: PrivateContainerd,
    netns: TestNetns,
    id: String,
    rootfs: String,
    extra: [String] = [],
    command: String = counterServer,
    port: Int = 8080,
    within: Double = 30
) throws {
    let created = try containerd.ctr(
        [
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            "--with-ns", "network:\(netns.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
        ] + extra
            + ["--rootfs", rootfs, id, "/bin/sh", "-c", command]
    )
    try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
    var body: String?
    _ = eventually(within: within) {
        body = netns.httpGet(port: port)
        return body != nil
    }
    try #require(body != nil, "\(id) never answered; log: \(containerd.log(tail: 30))")
}

/// Kills and removes `id` (best effort; for defers).
func removeTask(_ containerd: PrivateContainerd, _ id: String) {
    _ = try? containerd.ctr(["task", "kill", "-s", "SIGKILL", id])
    _ = eventually(within: 20) {
        (try? containerd.ctr(["task", "rm", id]).status) == 0 || taskRow(containerd, id) == nil
    }
    _ = try? containerd.ctr(["c", "rm", id])
}

/// Waits until `count` checkpoints were logged and no process is left in the namespace.
func waitScaledDown(_ containerd: PrivateContainerd, netns: TestNetns, checkpoints count: Int) -> Bool {
    eventually(within: 60) {
        containerd.logLines(containing: "checkpointing done").count >= count && processes(inNetns: netns.path).isEmpty
    }
}

/// Scale to zero end to end through a real containerd: idle → checkpoint → SCALED_DOWN → the next
/// request restores the process with its memory.
@Suite(.serialized) struct ScaleToZeroTests {
    @Test(arguments: ContainerdFlavor.all)
    func busybox_scalesDownAndRestoresWithItsMemory(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2z")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2z")
        defer { netns.delete() }
        let id = "count1"
        let stdoutFile = containerd.directory + "/count1.out"
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2",
            "--annotation", "zeropod.ctrox.dev/scaledown-duration=2s",
            "--with-ns", "network:\(netns.path)", "--log-uri", "file://\(stdoutFile)", "--rootfs", rootfs, id,
            "/bin/sh", "-c", counterServer,
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer {
            _ = try? containerd.ctr(["task", "kill", "-s", "SIGKILL", id])
            _ = eventually(within: 20) { (try? containerd.ctr(["task", "rm", id]).status) == 0 }
            _ = try? containerd.ctr(["c", "rm", id])
        }
        var body: String?
        _ = eventually {
            body = netns.httpGet(port: 8080)
            return body != nil
        }
        #expect(body == "count=1\n")

        let zeropod = TestPaths.buildDirectory + "/zeropod"
        let statusSocket = NodeLayout().statusSocket(forShimSocket: containerd.shimSocket(group: id))
        var expected = 1
        var wakeTimes: [Double] = []
        for cycle in 1...5 {
            // Goes down: the checkpoint is logged and no process of the app is left on the host.
            let down = eventually(within: 60) {
                containerd.logLines(containing: "checkpointing done").count >= cycle
                    && processes(inNetns: netns.path).isEmpty
            }
            #expect(down, "cycle \(cycle): not scaled down; log: \(containerd.log(tail: 30))")
            guard down else { return }
            // containerd still sees the task running.
            let list = try containerd.ctr(["task", "ls"]).stdout
            #expect(
                list.split(separator: "\n").contains { $0.hasPrefix(id + " ") && $0.hasSuffix("RUNNING") },
                "task ls: \(list)"
            )
            // The status service (the manager's view) says SCALED_DOWN.
            let scaledDown = try run([zeropod, "status", "--socket", statusSocket, "--id", id], timeout: 30)
            #expect(
                scaledDown.stdout.contains("phase=SCALED_DOWN"),
                "cycle \(cycle): status: \(scaledDown.stdout) \(scaledDown.stderr)"
            )
            // The next request restores it and gets the in-memory counter.
            expected += 1
            let started = Date()
            let answer = netns.httpGet(port: 8080)
            wakeTimes.append(Date().timeIntervalSince(started) * 1000)
            #expect(
                answer == "count=\(expected)\n",
                "cycle \(cycle): \(answer ?? "no answer"); log: \(containerd.log(tail: 30))"
            )
            #expect(!processes(inNetns: netns.path).isEmpty)
        }
        let checkpoints = containerd.logLines(containing: "checkpointing done")
        let restores = containerd.logLines(containing: "restored process:")
        print(
            "[zpshim-s2z] \(flavor.name): \(checkpoints.count) checkpoints, \(restores.count) restores; "
                + "first request while scaled down, ms (ip netns exec + curl, incl. restore): "
                + wakeTimes.map { String(format: "%.0f", $0) }.joined(separator: " ")
        )
        for line in checkpoints.prefix(5) + restores.prefix(5) {
            if let range = line.range(of: "checkpointing done") ?? line.range(of: "restored process:") {
                print("[zpshim-s2z]   \(line[range.lowerBound...].prefix(60))")
            }
        }
        // Decision 0077: the checkpoints after a restore write only what changed since, on the
        // restored images as parent, up to three deep; the fifth is a full dump again (a chain of
        // four would be deeper than CRIUCheckpoints.maximumParentChain). The counter
        // above came back right through every chain.
        let parents = checkpoints.map { line in
            line.range(of: "parent=restore (").map { String(line[$0.upperBound...].prefix(1)) } ?? "-"
        }
        print("[zpshim-s2z] \(flavor.name): parent chain depth per checkpoint: \(parents.joined(separator: " "))")
        #expect(
            parents == ["-", "1", "2", "3", "-"],
            "checkpoints after a restore are incremental (write tracking): \(checkpoints.map { $0.suffix(400) }); restores: \(restores.map { $0.suffix(300) })"
        )
        // After the last restore: RUNNING again, and the metrics carry the checkpoints and restores.
        let running = try run([zeropod, "status", "--socket", statusSocket, "--id", id], timeout: 30)
        #expect(running.stdout.contains("phase=RUNNING"), "status: \(running.stdout) \(running.stderr)")
        let metrics = try run([zeropod, "status", "--metrics", "--socket", statusSocket], timeout: 30).stdout
        #expect(
            metrics.contains("zeropod_checkpoint_duration_seconds_count")
                && metrics.contains("zeropod_restore_duration_seconds_count"),
            "metrics: \(metrics.prefix(600))"
        )
        #expect(
            metrics.split(separator: "\n").contains {
                $0.hasPrefix("zeropod_restore_duration_seconds_count") && $0.hasSuffix(" 5")
            },
            "five restores expected in: \(metrics.prefix(1200))"
        )
        // Output written after the restores reached the task's log.
        let out = (try? String(contentsOfFile: stdoutFile, encoding: .utf8)) ?? ""
        #expect(out.contains("served-\(expected)"), "stdout log: \(out)")
    }
}
