import Foundation
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// The fault matrix (issue 15 §1) through a real containerd, both versions: each row injects a
/// fault into a real container and checks the outcome and what is left behind (processes, CRIU
/// workers, images, mounts, BPF links, sockets). Each prints a `[fault-matrix]` line with the
/// outcome and the time to recover, for docs/security.md's table.
@Suite(.serialized) struct FaultMatrixTests {
    /// CRIU refuses the app: a process of the container holds a perf event fd, which CRIU cannot
    /// dump. The app keeps serving with its memory, no image is left, the failure is reported once
    /// with CRIU's own log tail; the next scale-down kills it and a request cold-starts it.
    @Test(arguments: ContainerdFlavor.all)
    func criuRefusesTheApp_keepsServingWithItsMemory(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmprf")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-prf")
        defer { netns.delete() }
        let tools = try PerfHolder.build(in: containerd.directory + "/tools")
        let id = "perf1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            extra: ["--mount", "type=bind,src=\(tools),dst=/tmp,options=rbind:ro"],
            command: "/tmp/perfhold & " + counterServer
        )
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        // The fault is in place: a process of the container holds the perf event fd.
        #expect(
            eventually { processes(inNetns: netns.path).contains { holdsPerfEvent($0) } },
            "no process of the container holds a perf event fd"
        )
        let failed = eventually(within: 60) { !containerd.logLines(containing: "checkpoint failed").isEmpty }
        try #require(failed, "no checkpoint failure: \(containerd.log(tail: 30))")
        let failedAt = ContinuousClock.now
        // CRIU's real refusal, from its log tail (the shim's message spans lines): the perf event file.
        #expect(
            containerd.logText.contains("perf_event"),
            "the report carries CRIU's log tail: \(containerd.log(tail: 30))"
        )
        // Still serving, memory intact (the same process answers with the next count).
        #expect(!processes(inNetns: netns.path).isEmpty)
        #expect(netns.httpGet(port: 8080) == "count=2\n")
        let recovered = ContinuousClock.now - failedAt
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        #expect(!FileManager.default.fileExists(atPath: images), "partial images left in \(images)")
        #expect(criuChildren(of: shim).isEmpty, "CRIU processes left: \(criuChildren(of: shim))")
        // The next scale-down kills; a request cold-starts it (fresh memory).
        #expect(
            eventually(within: 60) {
                containerd.logLines(containing: "status SCALED_DOWN").count >= 1
                    && processes(inNetns: netns.path).isEmpty
            },
            "no scale-down by kill: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=1\n")
        #expect(containerd.logLines(containing: "checkpoint failed").count == 1, "reported once")
        print(
            "[fault-matrix] \(flavor.name) | CRIU refuses the app (perf event fd) | keeps serving with its memory "
                + "(downtime 0; next request answered \(ms(recovered)) after the failure), reported once with CRIU's log tail, "
                + "killed at the next scale-down | images none, CRIU workers none"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }

    /// CRIU is SIGKILLed in the middle of the dump of a shell holding 48 MiB, once it has seized the
    /// app's tasks: the failure is reported once, the partial images are removed, and the app is
    /// either let go (not stopped, not traced) and serves with its memory, or, when CRIU's parasite
    /// code was running inside it, it died with CRIU and the task is reported stopped (seen once in
    /// eight runs here; the other seven let it go); it is never left frozen or traced.
    @Test(arguments: ContainerdFlavor.all)
    func criuKilledMidDump_appKeepsServingWithItsMemory(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmkil")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-kil")
        defer { netns.delete() }
        let id = "kill1"
        // 48 MiB in the shell's own memory, so the dump takes long enough to be cut.
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            command: "x=$(head -c 50331648 /dev/zero | tr '\\0' a); " + counterServer
        )
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        // Mid-dump: CRIU has seized the app's tasks (their tracer is the CRIU worker).
        var tracer: Int32 = 0
        let seized = eventually(within: 60, every: 0.001) {
            tracer = processes(inNetns: netns.path).lazy.compactMap { tracerPid(of: $0) }.first { $0 != 0 } ?? 0
            return tracer != 0
        }
        try #require(seized, "CRIU never seized the app: \(containerd.log(tail: 30))")
        let worker = commandLine(of: tracer)
        kill(tracer, SIGKILL)
        let killedAt = ContinuousClock.now
        #expect(worker.first.map(isCRIUCommand) == true, "the tracer \(tracer) is \(worker)")
        #expect(
            eventually(within: 30) { !containerd.logLines(containing: "checkpoint failed").isEmpty },
            "no checkpoint failure: \(containerd.log(tail: 30))"
        )
        // Two outcomes, depending on the moment of the kill: CRIU's parasite code was not in the
        // app (the app is let go and answers with its memory), or it was, and the app dies with
        // CRIU (the shim reports the container stopped; containerd gets the exit, kubelet restarts it).
        var answer: String?
        let settled = eventually(within: 30) {
            if taskRow(containerd, id)?.status == "STOPPED" { return true }
            answer = netns.httpGet(port: 8080)
            return answer != nil
        }
        let recovered = ContinuousClock.now - killedAt
        #expect(settled, "neither serving nor stopped: \(containerd.log(tail: 30))")
        let outcome: String
        if let answer {
            #expect(answer == "count=2\n", "the app kept its memory")
            for pid in processes(inNetns: netns.path) {
                let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
                let state = status.split(separator: "\n").first { $0.hasPrefix("State:") } ?? ""
                #expect(!state.contains("stopped") && !state.contains("tracing"), "\(pid): \(state)")
                #expect(tracerPid(of: pid) == 0, "\(pid) is still traced")
            }
            outcome = "app let go, keeps serving with its memory (answered \(ms(recovered)) after the kill)"
        } else {
            #expect(processes(inNetns: netns.path).isEmpty, "a stopped task left processes")
            #expect(!containerd.logLines(containing: "status STOPPING").isEmpty)
            outcome =
                "the app died with CRIU (parasite inside): task STOPPED \(ms(recovered)) after the kill, exit reported"
        }
        #expect(eventually { !FileManager.default.fileExists(atPath: images) }, "partial images left in \(images)")
        #expect(criuChildren(of: shim).isEmpty && !isAlive(tracer))
        #expect(containerd.logLines(containing: "checkpoint failed").count == 1, "reported once")
        print(
            "[fault-matrix] \(flavor.name) | CRIU SIGKILLed mid-dump (app's tasks seized) | \(outcome), reported once "
                + "| partial images removed, CRIU workers none"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }

    /// The disk fills up during the checkpoint (the state folder on a 96 KiB tmpfs): the app keeps
    /// serving with its memory, the partial images are removed (the tmpfs is empty again), the
    /// failure is reported once.
    @Test(arguments: ContainerdFlavor.all)
    func diskFullAtCheckpoint_keepsServingAndRemovesPartialImages(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let state = "/tmp/zpfm-full-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: state) }
        _ = try run(["mount", "-t", "tmpfs", "-o", "size=96k,mode=0700", "tmpfs", state]).checked()
        defer { _ = try? run(["umount", "-l", state]) }
        let nodeConfig = state + ".conf"
        try Data("state-dir = \(state)\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "fmful",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-ful")
        defer { netns.delete() }
        let id = "full1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        let failed = eventually(within: 60) { !containerd.logLines(containing: "checkpoint failed").isEmpty }
        try #require(failed, "no checkpoint failure: \(containerd.log(tail: 30))")
        let failedAt = ContinuousClock.now
        #expect(
            containerd.logText.contains("No space left on device"),
            "the report says why: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 20))")
        let recovered = ContinuousClock.now - failedAt
        let images = NodeLayout(stateDirectory: state).imageDirectory(
            containerdNamespace: containerd.namespace,
            containerID: id
        )
        #expect(!FileManager.default.fileExists(atPath: images), "partial images left in \(images)")
        let used = try run(["df", "--output=used", "-k", state]).checked().stdout
            .split(separator: "\n").last.map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(used == "0", "the tmpfs is empty again (KiB used: \(used ?? "?"))")
        #expect(criuChildren(of: shim).isEmpty)
        #expect(containerd.logLines(containing: "checkpoint failed").count == 1, "reported once")
        print(
            "[fault-matrix] \(flavor.name) | disk full at checkpoint (96 KiB state tmpfs) | keeps serving with its memory "
                + "(downtime 0; next request answered \(ms(recovered)) after the failure), reported once | partial images removed "
                + "(tmpfs used \(used ?? "?") KiB), CRIU workers none"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim, state: state)
    }

    /// A truncated image at restore (every image file cut to half its size): the request that
    /// wakes the container is answered by one cold start (count=1), the failure is reported, no
    /// half-restored process is left next to the cold-started one, the bad images are removed.
    @Test(arguments: ContainerdFlavor.all)
    func truncatedImageAtRestore_oneColdStart(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmtrn")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-trn")
        defer { netns.delete() }
        let id = "trunc1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        var truncated = 0
        for file in (try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [] where file.hasSuffix(".img") {
            let path = images + "/" + file
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            guard size > 1 else { continue }
            #expect(truncate(path, off_t(size / 2)) == 0)
            truncated += 1
        }
        try #require(truncated > 0, "no image files in \(images)")
        let start = ContinuousClock.now
        #expect(netns.httpGet(port: 8080) == "count=1\n", "log: \(containerd.log(tail: 30))")
        let recovered = ContinuousClock.now - start
        _ = eventually(within: 5) { !containerd.logLines(containing: "cold started process").isEmpty }
        #expect(
            containerd.logLines(containing: "restore failed").count == 1,
            "reported once: \(containerd.log(tail: 30))"
        )
        #expect(containerd.logLines(containing: "cold started process").count == 1, "one cold start")
        // One process tree: the cold-started shell (and its nc), no half-restored one.
        let pid = try #require(taskRow(containerd, id)?.pid)
        let inNetns = processes(inNetns: netns.path)
        #expect(inNetns.allSatisfy { $0 == pid || parent(of: $0) == pid }, "processes beside the new init: \(inNetns)")
        #expect(taskRow(containerd, id)?.status == "RUNNING")
        #expect(!FileManager.default.fileExists(atPath: images + "/inventory.img"), "corrupt images kept")
        #expect(criuChildren(of: shim).isEmpty)
        #expect(MountPoints.under("/run/containerd/runc/\(containerd.namespace)/\(id)/").isEmpty, "restore mounts left")
        print(
            "[fault-matrix] \(flavor.name) | truncated image at restore | one cold start, reported once, "
                + "no half-restored process | corrupt images removed, restore mounts none, CRIU workers none | "
                + "answered by the cold start in \(ms(recovered))"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }

    /// The shim is SIGKILLed while its container is scaled down (with a prepared restore):
    /// containerd runs the shim's `delete`, the task reports exit 137, and once containerd removes
    /// it nothing is left: no images, no lazy-pages daemon, no restore mounts, no BPF link, no
    /// sockets, no wake group entry; the node takes a new container of the same id at once.
    @Test(arguments: ContainerdFlavor.all)
    func shimKilledWhileScaledDown_nothingStaleBlocksTheNode(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmshk")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-shk")
        defer { netns.delete() }
        let eventsFile = containerd.directory + "/events.txt"
        let events = try containerd.startEvents(into: eventsFile)
        defer { containerd.stopEvents(events) }
        let id = "shk1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/wake-group=shk"]
        )
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        #expect(FileManager.default.fileExists(atPath: images + "/inventory.img"))
        kill(shim, SIGKILL)
        let killedAt = ContinuousClock.now
        let stopped = eventually(within: 60) {
            let text = (try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").contains { $0.contains("/tasks/exit") && $0.contains("\"\(id)\"") }
        }
        let recovered = ContinuousClock.now - killedAt
        #expect(stopped, "no exit event after the shim died: \(containerd.log(tail: 30))")
        let exitLine = ((try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? "").split(separator: "\n")
            .first { $0.contains("/tasks/exit") && $0.contains("\"\(id)\"") }
        #expect(exitLine?.contains("\"exit_status\":137") == true, "\(exitLine ?? "")")
        #expect(eventually { taskRow(containerd, id)?.status != "RUNNING" }, "the task still shows RUNNING")
        #expect(eventually { !FileManager.default.fileExists(atPath: images) }, "images left in \(images)")
        let lazyDaemons = processes(matching: ["lazy-pages"]).filter { commandLine(of: $0).contains(images) }
        #expect(lazyDaemons.isEmpty, "lazy-pages daemons left: \(lazyDaemons)")
        #expect(MountPoints.under("/run/containerd/runc/\(containerd.namespace)/\(id)/").isEmpty, "restore mounts left")
        let registryEntry = NodeLayout().wakeGroupDirectory + "/\(containerd.namespace)/_/shk/\(id)"
        #expect(!FileManager.default.fileExists(atPath: registryEntry), "wake group entry left")
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
        // Nothing stale blocks the node: the same id starts again, in the same netns.
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        #expect(netns.httpGet(port: 8080) == "count=2\n")
        print(
            "[fault-matrix] \(flavor.name) | shim SIGKILLed while scaled down | containerd gets exit 137 \(ms(recovered)) "
                + "after the kill, the same id starts again | images, lazy-pages daemon, restore mounts, wake group entry, "
                + "sockets, BPF links: none"
        )
    }

    /// The app exits by itself while running (status 7) and right after a restore (status 9):
    /// containerd gets each exit status, the task is STOPPED, nothing stays.
    @Test(arguments: ContainerdFlavor.all)
    func appExits_containerdGetsTheStatus(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmext")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-ext")
        defer { netns.delete() }
        let eventsFile = containerd.directory + "/events.txt"
        let events = try containerd.startEvents(into: eventsFile)
        defer { containerd.stopEvents(events) }
        func exitStatus(_ id: String) -> String? {
            let text = (try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? ""
            guard
                let line = text.split(separator: "\n").first(where: {
                    $0.contains("/tasks/exit") && $0.contains("\"\(id)\"")
                }),
                let range = line.range(of: "\"exit_status\":")
            else { return nil }
            return String(line[range.upperBound...].prefix { $0.isNumber })
        }
        // While running: exits 7 right after its first answer, before any scale-down (2 s idle).
        let running = "running1"
        try startCounter(
            containerd,
            netns: netns,
            id: running,
            rootfs: rootfs,
            command:
                "printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\ncount=1\\n' | nc -l -p 8080 >/dev/null; exit 7"
        )
        #expect(eventually(within: 30) { exitStatus(running) != nil }, "no exit event: \(containerd.log(tail: 20))")
        #expect(exitStatus(running) == "7")
        #expect(eventually { taskRow(containerd, running)?.status == "STOPPED" })
        removeTask(containerd, running)
        #expect(eventually { processes(inNetns: netns.path).isEmpty })

        // Right after a restore: answers count=1, scales down, the next request restores it, it
        // answers count=2 and exits 9.
        let restored = "restored1"
        let exitsAfterTwo = """
            n=0; while true; do n=$((n+1)); \
            printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\ncount=%d\\n' $((7+${#n})) $n | nc -l -p 8080 >/dev/null; \
            [ $n -ge 2 ] && exit 9; done
            """
        try startCounter(containerd, netns: netns, id: restored, rootfs: rootfs, command: exitsAfterTwo)
        defer { removeTask(containerd, restored) }
        let shim = try #require(shimPid(containerd, group: restored))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let start = ContinuousClock.now
        #expect(netns.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 20))")
        #expect(
            eventually(within: 30) { exitStatus(restored) != nil },
            "no exit event after the restore: \(containerd.log(tail: 20))"
        )
        let reported = ContinuousClock.now - start
        #expect(exitStatus(restored) == "9")
        #expect(eventually { taskRow(containerd, restored)?.status == "STOPPED" })
        print(
            "[fault-matrix] \(flavor.name) | app exits by itself (running: 7, right after a restore: 9) | containerd gets "
                + "both statuses, task STOPPED | nothing left after delete | exit reported \(ms(reported)) after the waking request"
        )
        removeTask(containerd, restored)
        try expectNothingLeft(containerd, netns: netns, id: restored, shim: shim)
    }
}

/// A static C program that opens a perf event (a software task clock on itself) and holds it:
/// CRIU cannot dump perf event files.
enum PerfHolder {
    static let source = """
        #include <linux/perf_event.h>
        #include <stdio.h>
        #include <string.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        int main(void) {
            struct perf_event_attr a;
            memset(&a, 0, sizeof a);
            a.type = PERF_TYPE_SOFTWARE;
            a.size = sizeof a;
            a.config = PERF_COUNT_SW_TASK_CLOCK;
            a.disabled = 1;
            a.exclude_kernel = 1;
            a.exclude_hv = 1;
            long fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
            if (fd < 0) { perror("perf_event_open"); return 1; }
            for (;;) pause();
        }
        """

    /// Compiles the program statically into `folder` (returned) as `perfhold`.
    static func build(in folder: String) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(source.utf8).write(to: URL(fileURLWithPath: folder + "/perfhold.c"))
        _ = try run(["cc", "-static", "-O2", "-o", folder + "/perfhold", folder + "/perfhold.c"], timeout: 120)
            .checked()
        return folder
    }
}

/// The shim serving `group` (its socket name) in `containerd`.
func shimPid(_ containerd: PrivateContainerd, group: String) -> Int32? {
    processes(matching: ["containerd-shim-zeropod-v2", "-socket", containerd.shimSocket(group: group)]).first
}

/// The parent pid of `pid` (from /proc/PID/stat), nil when it is gone.
func parent(of pid: Int32) -> Int32? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) : nil
}

/// The `TracerPid` of `pid` (0 when untraced), nil when it is gone.
func tracerPid(of pid: Int32) -> Int32? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("TracerPid:") })
    else { return nil }
    return Int32(line.dropFirst("TracerPid:".count).trimmingCharacters(in: .whitespaces))
}

/// Whether a command line's first word is CRIU's (`criu`, a path to it, or the title CRIU gives
/// itself while it works, e.g. `criu: dump --rpc -t 123`).
func isCRIUCommand(_ arg0: String) -> Bool {
    arg0 == "criu" || arg0.hasSuffix("/criu") || arg0.hasPrefix("criu: ")
}

/// CRIU processes the shim started that still run (`criu swrk`, `criu lazy-pages`).
func criuChildren(of shim: Int32) -> [Int32] {
    allProcesses().filter { pid in
        parent(of: pid) == shim && commandLine(of: pid).first.map(isCRIUCommand) == true
    }
}

/// Milliseconds, for the matrix lines.
func ms(_ d: Duration) -> String {
    "\(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000) ms"
}

/// After the container `id` was deleted: no process in the pod netns, no images, no mounts under
/// containerd's folder or runc's state, no BPF link on the netns, the shim gone with its sockets,
/// no CRIU worker left.
func expectNothingLeft(
    _ containerd: PrivateContainerd,
    netns: TestNetns,
    id: String,
    shim: Int32,
    state: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    #expect(
        eventually { processes(inNetns: netns.path).isEmpty },
        "processes left in the netns",
        sourceLocation: sourceLocation
    )
    let layout = state.map { NodeLayout(stateDirectory: $0) } ?? NodeLayout()
    let images = layout.imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
    #expect(
        eventually { !FileManager.default.fileExists(atPath: images) },
        "images left in \(images)",
        sourceLocation: sourceLocation
    )
    #expect(eventually { !isAlive(shim) }, "shim \(shim) still running", sourceLocation: sourceLocation)
    #expect(criuChildren(of: shim).isEmpty, "CRIU processes left", sourceLocation: sourceLocation)
    let socket = containerd.shimSocket(group: id)
    #expect(
        eventually { !FileManager.default.fileExists(atPath: socket) },
        "shim socket left",
        sourceLocation: sourceLocation
    )
    #expect(
        eventually { !FileManager.default.fileExists(atPath: layout.statusSocket(forShimSocket: socket)) },
        "status socket left",
        sourceLocation: sourceLocation
    )
    #expect(
        MountPoints.under(containerd.directory + "/").isEmpty,
        "mounts left under containerd's folder",
        sourceLocation: sourceLocation
    )
    #expect(
        MountPoints.under("/run/containerd/runc/\(containerd.namespace)/").isEmpty,
        "mounts left in runc's state",
        sourceLocation: sourceLocation
    )
    var st = stat()
    if stat(netns.path, &st) == 0 {
        let links = (try? run(["bpftool", "-j", "link", "show"]).stdout) ?? ""
        #expect(
            !links.contains("\"netns_ino\":\(st.st_ino)"),
            "a BPF link of the pod netns is left",
            sourceLocation: sourceLocation
        )
    }
}

/// Everything a scale-down cycle creates on the node is owner-only (issue 15 §2), through a real
/// containerd: the state folder, every image, the run folder, the status socket folder and
/// socket, the wake group registry; uid 65534 cannot read an image; the images are gone right
/// after the restore. Prints `stat` of each path (docs/security.md).
@Suite(.serialized) struct OwnerOnlyEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func scaleDownCycle_createsOnlyOwnerOnlyFilesAndFolders(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let old = umask(0o022)  // what a node's shim inherits
        defer { umask(old) }
        let base = "/tmp/zpinv-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let layout = NodeLayout(runDirectory: base + "/r", stateDirectory: base + "/state")
        try Data("state-dir = \(layout.stateDirectory)\nrun-dir = \(layout.runDirectory)\n".utf8)
            .write(to: URL(fileURLWithPath: base + "/node.conf"))
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "fminv",
            environment: ["ZEROPOD_NODE_CONFIG": base + "/node.conf"]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-inv")
        defer { netns.delete() }
        let id = "inv1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/wake-group=inv"]
        )
        defer { removeTask(containerd, id) }
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = layout.imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        let found = try run(["find", layout.stateDirectory, layout.runDirectory]).checked().stdout
            .split(separator: "\n").map(String.init)
        let socket = containerd.shimSocket(group: id)
        let restoreStaging = "/run/containerd/runc/\(containerd.namespace)/\(id)/zeropod-restore"
        var listed = found + [socket]
        if FileManager.default.fileExists(atPath: restoreStaging) { listed.append(restoreStaging) }
        let stats = try run(["stat", "-c", "%A %U:%G %n"] + listed).checked().stdout
        print("[owner-only] \(flavor.name) scaled down:\n\(stats)")
        #expect(found.contains { $0.hasSuffix("/pages-1.img") }, "no pages image: \(found)")
        #expect(found.contains { $0.hasSuffix(".sock") }, "no status socket: \(found)")
        #expect(found.contains { $0.contains("/wake-groups/") }, "no wake group entry: \(found)")
        for path in found + (listed.last == restoreStaging ? [restoreStaging] : []) {
            var st = stat()
            #expect(lstat(path, &st) == 0)
            // A symbolic link's own mode is always 0777 and grants nothing (the prepared restore's
            // cgroup yard holds links to the host's hierarchies, decision 0072); its folder is
            // checked like every other.
            if st.st_mode & S_IFMT == S_IFLNK { continue }
            #expect(st.st_mode & 0o077 == 0, "\(path) is open to others: \(String(st.st_mode & 0o7777, radix: 8))")
        }
        // An unprivileged user cannot read the memory image, even with the folders opened.
        let nobody = try run([
            "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--", "cat", images + "/pages-1.img",
        ])
        #expect(
            nobody.status != 0 && nobody.stderr.contains("Permission denied"),
            "cat as 65534: \(nobody.status) \(nobody.stderr)"
        )
        // The restore: its images stay, owner-only, as the next checkpoint's parent (decision 0077),
        // and go with the container.
        #expect(netns.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 20))")
        #expect(
            eventually {
                FileManager.default.fileExists(atPath: images + "/prev/pages-1.img")
                    && !FileManager.default.fileExists(atPath: images + "/pages-1.img")
            },
            "the restored images were not kept as the parent: \((try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [])"
        )
        let after = try run(["find", layout.stateDirectory, layout.runDirectory]).checked().stdout
            .split(separator: "\n").map(String.init)
        print(
            "[owner-only] \(flavor.name) after the restore:\n\(try run(["stat", "-c", "%A %U:%G %n"] + after).stdout)"
        )
        for path in after where path.hasPrefix(images) {
            var st = stat()
            #expect(lstat(path, &st) == 0)
            if st.st_mode & S_IFMT == S_IFLNK { continue }
            #expect(st.st_mode & 0o077 == 0, "\(path) is open to others: \(String(st.st_mode & 0o7777, radix: 8))")
        }
        removeTask(containerd, id)
        #expect(
            eventually { !FileManager.default.fileExists(atPath: images) },
            "images left after the delete: \(images)"
        )
    }
}
