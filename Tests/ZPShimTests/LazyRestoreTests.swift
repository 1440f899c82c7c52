import Foundation
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// A shell that keeps ~16 MiB of random text in its own memory and serves a counter, the checksum
/// of that text taken at start and one taken when the answer was prepared (right after the previous
/// answer was sent). After a restore, the second answer checksums memory that came back through it.
let memoryServer = """
    s=$(head -c 12000000 /dev/urandom | base64); first=$(echo "$s" | md5sum | cut -c1-32); n=0; \
    while true; do n=$((n+1)); now=$(echo "$s" | md5sum | cut -c1-32); body="count=$n first=$first now=$now"; \
    printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s\\n' $((${#body}+1)) "$body" | nc -l -p 8080 >/dev/null; done
    """

/// The fields of a `memoryServer` answer.
private func parseMemoryAnswer(_ body: String?) -> (count: Int, first: String, now: String)? {
    guard let body else { return nil }
    var fields: [String: String] = [:]
    for part in body.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ") {
        let kv = part.split(separator: "=", maxSplits: 1)
        if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
    }
    guard let c = fields["count"].flatMap(Int.init), let first = fields["first"], let now = fields["now"] else {
        return nil
    }
    return (c, first, now)
}

/// The next `memoryServer` answer: retried while the server is between two `nc` (it checksums
/// 16 MiB before listening again, and a refused connection is not counted).
private func nextMemoryAnswer(_ netns: TestNetns) -> (count: Int, first: String, now: String)? {
    var answer: (count: Int, first: String, now: String)?
    _ = eventually(within: 60) {
        answer = parseMemoryAnswer(netns.httpGet(port: 8080))
        return answer != nil
    }
    return answer
}

/// `criu lazy-pages` daemons serving `images`.
private func lazyPagesDaemons(_ images: String) -> [Int32] {
    processes(matching: ["lazy-pages", images])
}

/// Lazy restore in the scale-down driver (docs/decisions/0009-lazy-restore-in-driver.md): with
/// `lazy-restore = on` the shim starts `criu lazy-pages` right after the checkpoint, the first
/// connection restores lazily, the daemon finishes and the images go; a daemon that died falls back
/// to a full restore; a kill while scaled down leaves nothing behind.
@Suite(.serialized) struct LazyRestoreTests {
    @Test func lazyRestore_memoryIntact_daemonAndImagesGone_fallbackAndKill() throws {
        let flavor = ContainerdFlavor.all[0]
        let rootfs = try TestPaths.busyboxRootfs()
        let nodeConfig = "/tmp/zpshim-lazy-\(UUID().uuidString.prefix(8)).conf"
        try Data("lazy-restore = on\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "lazy",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-lazy")
        defer { netns.delete() }
        let id = "lazymem1"
        let images = "/var/lib/zeropod-swift/i/\(containerd.namespace)/\(id)"
        let criuRoot = "/run/containerd/runc/\(containerd.namespace)/\(id)/criu-root"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs, command: memoryServer)
        defer { removeTask(containerd, id) }
        var answer = nextMemoryAnswer(netns)
        let first = try #require(answer?.first, "no answer from the memory server; log: \(containerd.log(tail: 30))")
        var count = try #require(answer?.count)

        // Cycle 1: lazy restore. While scaled down the daemon is up (prepared off the connection's path).
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        #expect(
            eventually(within: 30) { lazyPagesDaemons(images).count == 1 },
            "no criu lazy-pages for \(images) while scaled down; log: \(containerd.log(tail: 30))"
        )
        // The first answer was computed before the checkpoint; the next one reads the restored memory.
        answer = nextMemoryAnswer(netns)
        #expect(answer?.count == count + 1, "first answer after the lazy restore: \(String(describing: answer))")
        answer = nextMemoryAnswer(netns)
        #expect(
            answer?.count == count + 2 && answer?.first == first && answer?.now == first,
            "memory after the lazy restore: \(String(describing: answer)), expected first=now=\(first)"
        )
        count += 2
        #expect(
            eventually(within: 30) {
                !containerd.logLines(containing: "restored process:").filter { $0.contains("lazy=true") }.isEmpty
            },
            "the restore was not lazy: \(containerd.logLines(containing: "restored process:"))"
        )
        // The daemon pushes the rest and exits; then the images go.
        #expect(
            eventually(within: 60) { lazyPagesDaemons(images).isEmpty },
            "criu lazy-pages still runs after the restore"
        )
        #expect(eventually(within: 30) { !FileManager.default.fileExists(atPath: images) }, "images left in \(images)")
        #expect(!containerd.logLines(containing: "criu lazy-pages (pid").filter { $0.contains("finished") }.isEmpty)

        // Cycle 2: the daemon dies while scaled down → a full restore from the same images, memory intact.
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 2),
            "not scaled down again: \(containerd.log(tail: 30))"
        )
        // Kill the daemon once the shim has it ready (a daemon killed while the shim still waits
        // for its readiness costs the shim its 20 s readiness timeout).
        #expect(
            eventually(within: 30) {
                containerd.logLines(containing: "restore prepared").filter { $0.contains("lazy=true") }.count >= 2
            },
            "the second lazy restore was not prepared; log: \(containerd.log(tail: 20))"
        )
        var daemons: [Int32] = []
        _ = eventually(within: 30) {
            daemons = lazyPagesDaemons(images)
            return daemons.count == 1
        }
        try #require(daemons.count == 1, "no criu lazy-pages in cycle 2")
        kill(daemons[0], SIGKILL)
        #expect(eventually(within: 10) { !isAlive(daemons[0]) })
        answer = nextMemoryAnswer(netns)
        #expect(
            answer?.count == count + 1,
            "after the fallback restore: \(String(describing: answer)); log: \(containerd.log(tail: 30))"
        )
        answer = nextMemoryAnswer(netns)
        #expect(
            answer?.count == count + 2 && answer?.first == first && answer?.now == first,
            "memory after the fallback restore: \(String(describing: answer))"
        )
        // containerd copies the shim's log lines into its own log a moment later.
        #expect(
            eventually(within: 10) { !containerd.logLines(containing: "full restore from the same images").isEmpty }
        )
        #expect(
            eventually(within: 30) { !FileManager.default.fileExists(atPath: images) },
            "images left after the fallback"
        )

        // Cycle 3: killed while scaled down with a prepared daemon: nothing is left behind.
        try #require(waitScaledDown(containerd, netns: netns, checkpoints: 3), "not scaled down a third time")
        _ = eventually(within: 30) {
            daemons = lazyPagesDaemons(images)
            return daemons.count == 1
        }
        try #require(daemons.count == 1, "no criu lazy-pages in cycle 3")
        let mounts = { (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "" }
        // The daemon starts before the worker and its mounts: wait for the tmpfs copies (the rootfs
        // is bound at criu-root only when it is not a mount point already).
        let stateDir = (criuRoot as NSString).deletingLastPathComponent + "/"
        #expect(
            eventually(within: 30) { !MountPoints.under(stateDir).isEmpty },
            "the prepared restore's mounts under \(stateDir) are missing"
        )
        let killed = try containerd.ctr(["task", "kill", "-s", "SIGKILL", id])
        #expect(killed.status == 0, "ctr task kill: \(killed.stderr)")
        #expect(
            eventually(within: 30) { taskRow(containerd, id)?.status == "STOPPED" },
            "task ls: \(String(describing: taskRow(containerd, id)))"
        )
        #expect(eventually(within: 30) { !isAlive(daemons[0]) }, "criu lazy-pages \(daemons[0]) survived the kill")
        #expect(
            eventually(within: 30) { !FileManager.default.fileExists(atPath: images) },
            "images left after the kill"
        )
        #expect(!mounts().contains(criuRoot), "the prepared rootfs bind mount is left after the kill")
        #expect(MountPoints.under(stateDir).isEmpty, "mounts left after the kill: \(MountPoints.under(stateDir))")
        #expect(processes(inNetns: netns.path).isEmpty)
        let removed = try containerd.ctr(["task", "rm", id])
        #expect(removed.status == 0, "ctr task rm: \(removed.stderr)")
        #expect(processes(matching: [images]).isEmpty, "a process still names \(images)")
        for line in containerd.logLines(containing: "[ZPShim]")
        where ["restore prepared", "restored process", "lazy-pages", "lazy restore"].contains(where: {
            line.contains($0)
        }) {
            print(
                "[zpshim-lazy] "
                    + (line.range(of: "container=").map { String(line[$0.lowerBound...]) } ?? line).prefix(400)
            )
        }
    }

    /// A daemon that dies after a lazy restore, before it served every page, leaves the process
    /// without the pages it still lacked (it waits on them: the shim holds the daemon's
    /// userfaultfds, decision 0069): the shim must kill the container instead of letting it serve.
    ///
    /// A daemon stopped (SIGSTOP) before the connection blocks the restore itself, so the daemon
    /// is slowed down instead: while scaled down it is moved into a cgroup (v1 `cpu`) allowed
    /// 1 ms of CPU per second. The lazy restore completes (the daemon serves the few pages the
    /// restore needs), the daemon then pushes the remaining ~16 MiB at that pace, and is
    /// SIGKILLed while its log has no transfer summary yet (pages still unserved).
    @Test(
        .enabled(
            if: FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
            "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu to slow the lazy-pages daemon down"
        )
    )
    func lazyRestore_daemonKilledMidTransfer_containerKilled() throws {
        let cpuRoot = "/sys/fs/cgroup/cpu"
        let flavor = ContainerdFlavor.all[0]
        let rootfs = try TestPaths.busyboxRootfs()
        let unique = String(UUID().uuidString.prefix(8)).lowercased()
        let nodeConfig = "/tmp/zpshim-lazyguard-\(unique).conf"
        try Data("lazy-restore = on\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "lazyguard",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-lazyguard")
        defer { netns.delete() }
        let id = "lazyguard1"
        let images = "/var/lib/zeropod-swift/i/\(containerd.namespace)/\(id)"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs, command: memoryServer)
        defer { removeTask(containerd, id) }
        try #require(
            nextMemoryAnswer(netns) != nil,
            "no answer from the memory server; log: \(containerd.log(tail: 30))"
        )

        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        var daemons: [Int32] = []
        _ = eventually(within: 30) {
            daemons = lazyPagesDaemons(images)
            return daemons.count == 1
        }
        try #require(
            daemons.count == 1,
            "no criu lazy-pages for \(images) while scaled down; log: \(containerd.log(tail: 30))"
        )
        let daemon = daemons[0]
        let cgroup = cpuRoot + "/zpshim-lazyguard-\(unique)"
        try FileManager.default.createDirectory(atPath: cgroup, withIntermediateDirectories: false)
        defer {
            if isAlive(daemon) { kill(daemon, SIGKILL) }
            _ = eventually(within: 30) { rmdir(cgroup) == 0 || errno == ENOENT }
        }
        try Data("1000000".utf8).write(to: URL(fileURLWithPath: cgroup + "/cpu.cfs_period_us"))
        try Data("1000".utf8).write(to: URL(fileURLWithPath: cgroup + "/cpu.cfs_quota_us"))
        try Data("\(daemon)".utf8).write(to: URL(fileURLWithPath: cgroup + "/cgroup.procs"))

        // The connection restores lazily; the slowed daemon then pushes the remaining pages.
        let clientDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = netns.httpGet(port: 8080)
            clientDone.signal()
        }
        defer { _ = clientDone.wait(timeout: .now() + 30) }
        let connected = Date()
        let restored = eventually(within: 120) {
            !containerd.logLines(containing: "restored process:").filter { $0.contains("lazy=true") }.isEmpty
        }
        try #require(
            restored,
            "the lazy restore did not complete with the daemon slowed down; log: \(containerd.log(tail: 30))"
        )
        let restoreSeconds = Date().timeIntervalSince(connected)
        let restoredLine =
            containerd.logLines(containing: "restored process:").first { $0.contains("lazy=true") } ?? ""
        // Freeze the daemon to look at its log, then kill it: some process must still lack pages.
        kill(daemon, SIGSTOP)
        let log = ((try? String(contentsOfFile: images + "/lazy-pages.log", encoding: .utf8)) ?? "").split(
            separator: "\n"
        )
        let received = log.filter { $0.contains("Received PID:") }
        let summaries = log.filter { $0.contains("UFFD transferred pages:") }
        #expect(isAlive(daemon), "the daemon finished before it could be killed")
        #expect(
            !received.isEmpty && summaries.count < received.count,
            "the daemon's log shows it done already: \(received) \(summaries)"
        )
        // Decision 0069: the shim holds one userfaultfd per restored process, so that the kill
        // below leaves them waiting on their pages instead of on zero-filled ones.
        #expect(
            restoredLine.contains("uffd-held=\(received.count)"),
            "the shim does not hold the daemon's \(received.count) userfaultfds: \(restoredLine)"
        )
        // Unthrottled, it dies at once (a throttled one may wait a period), as a real crash would.
        try Data("\(daemon)".utf8).write(to: URL(fileURLWithPath: cpuRoot + "/cgroup.procs"))
        kill(daemon, SIGKILL)
        print(
            "[zpshim-lazyguard] lazy restore done \(String(format: "%.1f", restoreSeconds)) s after the connection; "
                + "daemon \(daemon) killed after \(log.count) log lines, \(received.count) processes, \(summaries.count) transfer summaries"
        )

        // The shim notices the daemon's end and kills the container: the task stops, nothing is left.
        #expect(
            eventually(within: 60) { taskRow(containerd, id)?.status == "STOPPED" },
            "task ls: \(String(describing: taskRow(containerd, id))); log: \(containerd.log(tail: 30))"
        )
        let why = containerd.logLines(containing: "ended before serving every page")
        #expect(
            why.contains { $0.contains("pid \(daemon)") && $0.contains("signal 9") && $0.contains(id) },
            "the shim log does not say why the container was killed: \(why)"
        )
        #expect(eventually(within: 30) { !isAlive(daemon) }, "criu lazy-pages \(daemon) is left")
        #expect(eventually(within: 30) { !FileManager.default.fileExists(atPath: images) }, "images left in \(images)")
        #expect(eventually(within: 30) { processes(inNetns: netns.path).isEmpty }, "processes left in the pod netns")
        let removed = try containerd.ctr(["task", "rm", id])
        #expect(removed.status == 0, "ctr task rm: \(removed.stderr)")
        #expect(processes(matching: [images]).isEmpty, "a process still names \(images)")
        for line in containerd.logLines(containing: "[ZPShim]")
        where ["restored process", "lazy-pages", "lazy restore", "status"].contains(where: { line.contains($0) }) {
            print(
                "[zpshim-lazyguard] "
                    + (line.range(of: "container=").map { String(line[$0.lowerBound...]) } ?? line).prefix(400)
            )
        }
    }
}
