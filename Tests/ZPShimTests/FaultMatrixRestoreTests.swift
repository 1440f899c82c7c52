import Foundation
import Testing
import ZPCheckpoint
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// A counter server that first fills `mebibytes` MiB of the shell's own memory, so that a dump
/// and a restore take long enough to be cut.
func bigCounterServer(mebibytes: Int) -> String {
    "x=$(head -c \(mebibytes << 20) /dev/zero | tr '\\0' a); " + counterServer
}

/// A GET from inside `netns` running in the background (curl, `seconds` at most); its body goes
/// to `output`. The caller reads it with ``BackgroundRequest/finish(within:)``.
struct BackgroundRequest {
    let process: Process
    let output: String

    init(_ netns: TestNetns, port: Int, output: String, seconds: Int = 90) throws {
        self.output = output
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") {
            p.executableURL = URL(fileURLWithPath: "/sbin/ip")
        }
        p.arguments = [
            "netns", "exec", netns.name, "curl", "-s", "--max-time", String(seconds), "http://127.0.0.1:\(port)/",
        ]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        process = p
    }

    /// Waits for curl to end (at most `seconds`); returns its body, or nil when it failed or was
    /// still running (then it is killed). (Foundation's `Process` reaps the child itself: polled
    /// through `isRunning`.)
    func finish(within seconds: Double = 120) -> String? {
        guard eventually(within: seconds, every: 0.05, { !process.isRunning }) else {
            kill(process.processIdentifier, SIGKILL)
            _ = eventually(within: 10) { !process.isRunning }
            return nil
        }
        let status = process.terminationStatus
        let body = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        if status != 0 || body.isEmpty {
            print("[background request] curl exit \(status), body \(body.debugDescription)")
        }
        return status == 0 && !body.isEmpty ? body : nil
    }
}

/// When the shim is killed during a restore.
enum RestoreMoment: String, CaseIterable, CustomStringConvertible, Sendable {
    /// As soon as CRIU created `restore.log` in the image folder.
    case logOpened
    /// As soon as the first restored task is in the pod's netns.
    case tasksForked
    /// As soon as CRIU logged its `pre-resume` notification (it resumes the tasks whatever the
    /// shim answers; the shim has not pointed runc's state at the new init yet).
    case tasksResumed

    var description: String { rawValue }
}

/// The last `bytes` bytes of a file (empty when unreadable).
func fileTail(_ path: String, bytes: Int = 8192) -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
    defer { try? handle.close() }
    let end = (try? handle.seekToEnd()) ?? 0
    try? handle.seek(toOffset: end > UInt64(bytes) ? end - UInt64(bytes) : 0)
    return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
}

/// The exit status of the first `/tasks/exit` event of `id` in a `ctr events` file.
func exitStatus(inEvents file: String, id: String) -> String? {
    let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
    guard
        let line = text.split(separator: "\n").first(where: {
            $0.contains("/tasks/exit") && $0.contains("\"\(id)\"")
        }),
        let range = line.range(of: "\"exit_status\":")
    else { return nil }
    return String(line[range.upperBound...].prefix { $0.isNumber })
}

/// Processes whose command line's first word is CRIU's.
func criuProcesses() -> [Int32] {
    allProcesses().filter { commandLine(of: $0).first.map(isCRIUCommand) == true }
}

/// The fault matrix rows around a restore in flight (issue 15 §1), through a real containerd, both
/// versions: the shim SIGKILLed while restoring, containerd restarted while restoring. Each prints
/// a `[fault-matrix]` line (docs/fault-matrix.md).
@Suite(.serialized) struct FaultMatrixRestoreTests {
    /// The shim is SIGKILLed while CRIU restores a 96 MiB app (CRIU's `restore.log` exists, the
    /// restore has not answered): containerd sees the task exit (137), no CRIU worker, lazy-pages
    /// daemon or half-restored process stays behind, no restore mount, image, socket or BPF link is
    /// left, and a new container of the same id starts in the same netns.
    @Test(arguments: ContainerdFlavor.all, RestoreMoment.allCases)
    func shimKilledWhileRestoring_taskExitsAndNothingStaysBehind(
        flavor: ContainerdFlavor,
        moment: RestoreMoment
    ) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmskr")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-skr")
        defer { netns.delete() }
        let eventsFile = containerd.directory + "/events.txt"
        let events = try containerd.startEvents(into: eventsFile)
        defer { containerd.stopEvents(events) }
        let id = "skr1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs, command: bigCounterServer(mebibytes: 96))
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        // The restore prepared while scaled down: its CRIU worker already runs (a child of the shim).
        let preparedWorkers = criuChildren(of: shim)
        let request = try BackgroundRequest(netns, port: 8080, output: containerd.directory + "/wake.out")
        // The restore is in flight once CRIU opened its log; its tasks are in the netns once forked.
        let inFlight = eventually(within: 30, every: 0.001) {
            switch moment {
            case .logOpened: return FileManager.default.fileExists(atPath: images + "/restore.log")
            case .tasksForked: return !processes(inNetns: netns.path).isEmpty
            case .tasksResumed:
                // CRIU tells the shim `pre-resume` and carries on without its answer; a restore
                // that finished before this poll saw it moved the images into `prev`, the next
                // checkpoint's parent (decision 0077), or removed them (the kill then comes after
                // the restore: the running row).
                return fileTail(images + "/restore.log").contains("Running pre-resume scripts")
                    || FileManager.default.fileExists(atPath: images + "/prev/restore.log")
                    || !FileManager.default.fileExists(atPath: images)
            }
        }
        try #require(inFlight, "no restore started: \(containerd.log(tail: 30))")
        let restoredAtKill = processes(inNetns: netns.path)
        let finishedAtKill =
            !FileManager.default.fileExists(atPath: images)
            || FileManager.default.fileExists(atPath: images + "/prev/restore.log")
        let workers = Set(preparedWorkers + criuChildren(of: shim))
        kill(shim, SIGKILL)
        let killedAt = ContinuousClock.now
        let logAtKill =
            (try? String(contentsOfFile: images + "/restore.log", encoding: .utf8))
            ?? (try? String(contentsOfFile: images + "/prev/restore.log", encoding: .utf8)) ?? ""
        let exited = eventually(within: 60) { exitStatus(inEvents: eventsFile, id: id) != nil }
        let recovered = ContinuousClock.now - killedAt
        #expect(exited, "no exit event after the shim died: \(containerd.log(tail: 30))")
        #expect(exitStatus(inEvents: eventsFile, id: id) == "137")
        #expect(eventually { taskRow(containerd, id)?.status != "RUNNING" }, "the task still shows RUNNING")
        // Nothing of the restore runs on, owned by no one.
        #expect(
            eventually { processes(inNetns: netns.path).isEmpty },
            "half-restored processes left: \(processes(inNetns: netns.path).map { commandLine(of: $0) })"
        )
        #expect(eventually { workers.allSatisfy { !isAlive($0) } }, "CRIU workers left: \(workers.filter(isAlive))")
        let lazyDaemons = processes(matching: ["lazy-pages"]).filter { commandLine(of: $0).contains(images) }
        #expect(lazyDaemons.isEmpty, "lazy-pages daemons left: \(lazyDaemons)")
        #expect(
            eventually { !FileManager.default.fileExists(atPath: images) },
            "images left in \(images): \((try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [])"
        )
        #expect(MountPoints.under("/run/containerd/runc/\(containerd.namespace)/\(id)/").isEmpty, "restore mounts left")
        let answer = request.finish()
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
        // Nothing stale blocks the node: the same id starts again in the same netns (fresh memory).
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        #expect(netns.httpGet(port: 8080) == "count=2\n")
        let phase =
            (finishedAtKill
                ? "after the restore finished"
                : restoredAtKill.isEmpty
                    ? "before CRIU forked the tree" : "\(restoredAtKill.count) restored task(s) in the netns")
            + ", delete killed "
            + "\(containerd.logLines(containing: "left in the cgroups of container \(id)").isEmpty ? "nothing" : "leftovers")"
        let lastLine = logAtKill.split(separator: "\n").last.map { String($0.prefix(80)) } ?? ""
        print(
            "[fault-matrix] \(flavor.name) | shim SIGKILLed while restoring (96 MiB app; \(phase); restore.log at: "
                + "\(lastLine)) | containerd gets exit 137 \(ms(recovered)) after the kill, the waking request "
                + "\(answer.map { "got \($0.debugDescription)" } ?? "failed"), the same id starts again | CRIU workers, "
                + "half-restored processes, lazy-pages daemons, images, restore mounts, sockets, BPF links: none"
        )
    }

    /// containerd is restarted (SIGTERM, then started again on the same root and state) while the
    /// shim restores a 96 MiB app: the restore completes, the waking request is answered with the
    /// app's memory, the restarted containerd sees the task RUNNING with the restored pid, and the
    /// container scales down and restores again under it.
    @Test(arguments: ContainerdFlavor.all)
    func containerdRestartedWhileRestoring_restoreCompletes(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmcrr")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-crr")
        defer { netns.delete() }
        let id = "crr1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs, command: bigCounterServer(mebibytes: 96))
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        let request = try BackgroundRequest(netns, port: 8080, output: containerd.directory + "/wake.out")
        let inFlight = eventually(within: 30, every: 0.001) {
            FileManager.default.fileExists(atPath: images + "/restore.log")
        }
        try #require(inFlight, "no restore started: \(containerd.log(tail: 30))")
        let oldContainerd = containerd.pid
        let restartedAt = ContinuousClock.now
        try containerd.restart()
        let back = ContinuousClock.now - restartedAt
        #expect(!isAlive(oldContainerd) && containerd.pid != oldContainerd)
        let answer = request.finish()
        let answered = ContinuousClock.now - restartedAt
        #expect(answer == "count=2\n", "the waking request: \(answer ?? "failed"); log: \(containerd.log(tail: 30))")
        #expect(isAlive(shim), "the shim died with containerd")
        // The restarted containerd knows the task, running with the restored init.
        let row = taskRow(containerd, id)
        #expect(row?.status == "RUNNING", "task row after the restart: \(String(describing: row))")
        let inNetns = processes(inNetns: netns.path)
        #expect(row.map { inNetns.contains($0.pid) } == true, "the task's pid is not the restored one: \(inNetns)")
        #expect(
            criuChildren(of: shim).count <= 1,
            "CRIU workers beside a prepared one: \(criuChildren(of: shim))"
        )
        // It goes on under the new containerd: scales down and restores again with its memory.
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 2),
            "no second scale-down: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=3\n", "log: \(containerd.log(tail: 30))")
        print(
            "[fault-matrix] \(flavor.name) | containerd restarted while restoring (96 MiB app) | the restore completes, "
                + "the waking request is answered with the app's memory \(ms(answered)) after the restart began "
                + "(containerd back after \(ms(back))), the task RUNNING under the new containerd, next cycle normal "
                + "| nothing extra: one shim, no stray CRIU worker"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }
}

/// `delete` after a shim died mid-restore (``DeleteCommand/killRestoreLeftovers(id:runcRoot:)``),
/// on a real cgroup: what runs in the container's cgroups is killed although runc's state names a
/// dead init; a cgroup hierarchy's root is never taken for a container's.
@Suite(.serialized) struct RestoreLeftoversTests {
    /// A runc root with `<id>/state.json` naming a dead init and `cgroupPaths`.
    private func runcRoot(id: String, cgroupPaths: [String: String]) throws -> String {
        let root = "/tmp/zpfm-left-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/" + id, withIntermediateDirectories: true)
        let paths = cgroupPaths.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ")
        let json = "{\"id\": \"\(id)\", \"init_process_pid\": 2147483000, \"cgroup_paths\": {\(paths)}}"
        try Data(json.utf8).write(to: URL(fileURLWithPath: root + "/\(id)/state.json"))
        return root
    }

    /// The pids hierarchy (cgroup v1) or the unified one.
    private var hierarchy: String {
        FileManager.default.fileExists(atPath: "/sys/fs/cgroup/pids/cgroup.procs")
            ? "/sys/fs/cgroup/pids" : "/sys/fs/cgroup"
    }

    @Test func processesInTheContainersCgroup_areKilledThoughRuncsInitIsDead() throws {
        let cgroup = hierarchy + "/zpfm-left-\(UUID().uuidString.prefix(8))"
        #expect(mkdir(cgroup, 0o755) == 0)
        defer { _ = rmdir(cgroup) }
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["600"]
        try sleeper.run()
        let pid = sleeper.processIdentifier
        defer { if isAlive(pid) { kill(pid, SIGKILL) } }
        try Data("\(pid)\n".utf8).write(to: URL(fileURLWithPath: cgroup + "/cgroup.procs"))
        let root = try runcRoot(id: "left1", cgroupPaths: ["pids": cgroup])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let killed = DeleteCommand.killRestoreLeftovers(id: "left1", runcRoot: root)
        #expect(killed == [pid])
        #expect(eventually { !sleeper.isRunning }, "the process in the container's cgroup still runs")
        // Without a state file there is nothing to go by: nothing is signalled.
        #expect(DeleteCommand.killRestoreLeftovers(id: "none", runcRoot: root).isEmpty)
    }

    @Test func aHierarchyRoot_isNeverTakenForTheContainersCgroup() throws {
        let root = try runcRoot(id: "left2", cgroupPaths: ["pids": hierarchy])
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(DeleteCommand.killRestoreLeftovers(id: "left2", runcRoot: root).isEmpty)
    }
}

/// A shell that keeps `megabytes` MB of random text in its own memory and serves a counter with
/// the checksum of that text taken at start (`first`) and when the answer was prepared (`now`):
/// after a restore, `now` checksums memory that came back through it, so a process running on
/// zero-filled pages cannot answer `now == first`.
func checksummedMemoryServer(megabytes: Int) -> String {
    """
    s=$(head -c \(megabytes * 750_000) /dev/urandom | base64); first=$(echo "$s" | md5sum | cut -c1-32); n=0; \
    while true; do n=$((n+1)); now=$(echo "$s" | md5sum | cut -c1-32); body="count=$n first=$first now=$now"; \
    printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s\\n' $((${#body}+1)) "$body" | nc -l -p 8080 >/dev/null; done
    """
}

/// `count`, `first` and `now` of a ``checksummedMemoryServer(megabytes:)`` answer.
func checksummedAnswer(_ body: String?) -> (count: Int, first: String, now: String)? {
    guard let body else { return nil }
    var fields: [String: String] = [:]
    for part in body.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ") {
        let kv = part.split(separator: "=", maxSplits: 1)
        if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
    }
    guard let count = fields["count"].flatMap(Int.init), let first = fields["first"], let now = fields["now"] else {
        return nil
    }
    return (count, first, now)
}

/// The lazy-pages daemon hangs (SIGSTOP, not killed) in the middle of a lazy restore, once the
/// restored tasks exist: CRIU's restore waits on pages the daemon does not serve (before, until
/// CRIU's 120 s timeout). The shim sees neither the daemon nor the CRIU worker make progress for
/// 10 s, kills the worker and the restored tasks (before the daemon, so no task runs on
/// zero-filled pages), then the daemon, and restores fully from the same images: the waking
/// request is answered with the app's memory. Prints the time from the hang to that answer.
@Suite(.serialized) struct LazyPagesHangTests {
    @Test(arguments: ContainerdFlavor.all)
    func lazyPagesDaemonHangs_restoreStoppedWithinTheBound_fullRestoreAnswers(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let nodeConfig = "/tmp/zpfm-hang-\(UUID().uuidString.prefix(8)).conf"
        try Data("lazy-restore = on\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "fmhng",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-hng")
        defer { netns.delete() }
        let eventsFile = containerd.directory + "/events.txt"
        let events = try containerd.startEvents(into: eventsFile)
        defer { containerd.stopEvents(events) }
        let id = "hang1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            command: checksummedMemoryServer(megabytes: 48)
        )
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        var daemon: Int32 = 0
        #expect(
            eventually {
                daemon = processes(matching: ["lazy-pages", images]).first ?? 0
                return daemon != 0
            },
            "no lazy-pages daemon prepared: \(containerd.log(tail: 30))"
        )
        try #require(daemon != 0)
        let request = try BackgroundRequest(netns, port: 8080, output: containerd.directory + "/wake.out")
        // Mid-restore: the restored tasks exist, the daemon has served nothing or little.
        try #require(
            eventually(within: 30, every: 0.001) { !processes(inNetns: netns.path).isEmpty },
            "no restore: \(containerd.log(tail: 30))"
        )
        kill(daemon, SIGSTOP)
        let hungAt = ContinuousClock.now
        defer { if isAlive(daemon) { kill(daemon, SIGKILL) } }
        let answer = request.finish(within: 180)
        let recovered = ContinuousClock.now - hungAt
        // Answered by a full restore from the same images: the app's own memory, the next count.
        let parsed = checksummedAnswer(answer)
        #expect(parsed?.count == 2, "the waking request: \(answer ?? "failed"); log: \(containerd.log(tail: 30))")
        #expect(
            parsed.map { $0.now == $0.first } == true,
            "answered from memory that is not the app's: \(answer ?? "")"
        )
        #expect(
            !containerd.logLines(containing: "made no progress for 10 s during the restore").isEmpty,
            "the hang is not reported: \(containerd.log(tail: 30))"
        )
        #expect(eventually { !isAlive(daemon) }, "the hung daemon \(daemon) is still there")
        #expect(exitStatus(inEvents: eventsFile, id: id) == nil, "the task exited")
        #expect(taskRow(containerd, id)?.status == "RUNNING")
        print(
            "[fault-matrix] \(flavor.name) | lazy-pages daemon hangs mid-restore (SIGSTOP once the restored tasks "
                + "exist; 48 MB of random text) | after 10 s without progress of the daemon or the CRIU worker the "
                + "restore is stopped (worker and tasks killed, then the daemon) and a full restore from the same "
                + "images answers the waking request with the app's memory \(ms(recovered)) after the hang "
                + "(before: CRIU's 120 s timeout) | the hung daemon killed; nothing else left after delete"
        )
        // Deleted once scaled down again (the normal path), nothing stays.
        #expect(
            waitScaledDown(containerd, netns: netns, checkpoints: 2),
            "no scale-down after the full restore: \(containerd.log(tail: 30))"
        )
        removeTask(containerd, id)
        #expect(
            eventually { !FileManager.default.fileExists(atPath: images) },
            "images left after delete: \((try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [])"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }
}

/// `ports-map` naming a port that another container of the pod serves, with two real containers in
/// one pod netns (the driver's refusal reading the real /proc): container `a` serves a counter on
/// 8080; container `b` (its own listener on 8081) has `ports-map` `b=8080`. `b`'s scale-down is
/// turned off with the reason logged and it is never checkpointed; `a` keeps serving with its
/// memory.
@Suite(.serialized) struct PortsMapConflictEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func portsMapNamingAnotherContainersPort_scaleDownOffForIt_theOtherKeepsServing(
        flavor: ContainerdFlavor
    ) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "fmpmc")
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-pmc")
        defer { netns.delete() }
        func run(_ id: String, annotations: [String], command: String) throws {
            let created = try containerd.ctr(
                ["run", "-d", "--runtime", "io.containerd.zeropod.v2"]
                    + annotations.flatMap { ["--annotation", $0] }
                    + [
                        "--with-ns", "network:\(netns.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
                        "--rootfs", rootfs, id, "/bin/sh", "-c", command,
                    ]
            )
            try #require(created.status == 0, "ctr run \(id): \(created.stderr)\n\(containerd.log(tail: 20))")
        }
        // a: the counter on 8080, scale-down after an hour (it stays up for the test).
        try run(
            "a",
            annotations: ["io.kubernetes.cri.container-name=a", "zeropod.ctrox.dev/scaledown-duration=1h"],
            command: counterServer
        )
        defer { removeTask(containerd, "a") }
        #expect(
            eventually { netns.httpGet(port: 8080) == "count=1\n" },
            "a never answered: \(containerd.log(tail: 30))"
        )
        // b: listens on 8081, but its ports-map names a's 8080.
        let other = counterServer.replacingOccurrences(of: "-p 8080", with: "-p 8081")
        try run(
            "b",
            annotations: [
                "io.kubernetes.cri.container-name=b", "zeropod.ctrox.dev/scaledown-duration=2s",
                "zeropod.ctrox.dev/ports-map=b=8080",
            ],
            command: other
        )
        defer { removeTask(containerd, "b") }
        let refusal = "scale-down is off: zeropod.ctrox.dev/ports-map names port(s) [8080]"
        #expect(
            eventually(within: 60) { containerd.logLines(containing: refusal).contains { $0.contains("b") } },
            "no refusal logged for b: \(containerd.log(tail: 30))"
        )
        // Three scale-down durations of b later: nothing was checkpointed, both still serve.
        let since = ContinuousClock.now
        _ = eventually(within: 6) { ContinuousClock.now - since >= .seconds(6) && false }
        #expect(containerd.logLines(containing: "checkpointing done").isEmpty, "a checkpoint happened")
        #expect(containerd.logLines(containing: "handed over").isEmpty, "a listener was handed over")
        #expect(netns.httpGet(port: 8080) == "count=2\n", "a lost its port or its memory")
        #expect(netns.httpGet(port: 8081) == "count=1\n", "b is not serving")
        #expect(taskRow(containerd, "a")?.status == "RUNNING" && taskRow(containerd, "b")?.status == "RUNNING")
        let line = containerd.logLines(containing: refusal).first ?? ""
        print(
            "[fault-matrix] \(flavor.name) | ports-map of container b names port 8080 that container a of the same "
                + "netns serves | b's scale-down off, logged (\(line.split(separator: "]").last.map { String($0.prefix(140)) } ?? "")); "
                + "no checkpoint, no handover in 6 s; a answers count=2 with its memory, b serves 8081 | —"
        )
    }
}

/// A simulated reboot (issue 15 §1), both containerd versions: a scaled-down container (lazy
/// restore prepared: a `criu lazy-pages` daemon and a CRIU worker wait) and a running one in one
/// pod netns; then every process of theirs and containerd are SIGKILLed by pid (containerd first,
/// so it runs no cleanup), this instance's folders on /run are emptied (runc's state of the test's
/// namespace, containerd's state folder, the shim sockets, the test's own run folder, mounts under
/// them), the pod netns and the containers' cgroups go, and the state folder is kept with its image
/// folder dated before the boot. containerd starts again on the same root: no task is resumed (a
/// reboot ends them; kubelet would start new containers), the old container records can be
/// removed, a new container of the same id starts, and its shim removes the images from before the
/// boot (decision 0053); stale BPF pins of the node (kept here, as bpffs is not emptied in the
/// simulation) block nothing: the new container scales down and restores.
@Suite(.serialized) struct SimulatedRebootTests {
    @Test(arguments: ContainerdFlavor.all)
    func simulatedReboot_nothingStaleBlocks_imagesFromBeforeTheBootRemoved(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let base = "/tmp/zprb-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let layout = NodeLayout(runDirectory: base + "/r", stateDirectory: base + "/state")
        try Data(
            "state-dir = \(layout.stateDirectory)\nrun-dir = \(layout.runDirectory)\nlazy-restore = on\n".utf8
        ).write(to: URL(fileURLWithPath: base + "/node.conf"))
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "fmrbt",
            environment: ["ZEROPOD_NODE_CONFIG": base + "/node.conf"]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-rbt")
        defer { netns.delete() }
        let down = "rb1"
        let running = "rb2"
        try startCounter(containerd, netns: netns, id: down, rootfs: rootfs)
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=1h", "--with-ns", "network:\(netns.path)", "--rootfs", rootfs,
            running, "/bin/sh", "-c", counterServer.replacingOccurrences(of: "-p 8080", with: "-p 8081"),
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)")
        #expect(eventually { netns.httpGet(port: 8081) == "count=1\n" }, "\(running) never answered")
        try #require(
            eventually(within: 60) {
                containerd.logLines(containing: "checkpointing done").count >= 1
                    && !containerd.logLines(containing: "restore prepared").isEmpty
            },
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = layout.imageDirectory(containerdNamespace: containerd.namespace, containerID: down)
        let shims = [down, running].compactMap { shimPid(containerd, group: $0) }
        try #require(shims.count == 2, "shims: \(shims)")
        let daemons = processes(matching: ["lazy-pages", images])
        let workers = shims.flatMap { criuChildren(of: $0) }.filter { !daemons.contains($0) }
        let apps = processes(inNetns: netns.path)
        #expect(
            !daemons.isEmpty && !workers.isEmpty && !apps.isEmpty,
            "daemons \(daemons) workers \(workers) apps \(apps)"
        )

        // Power off: containerd first (it must not clean up after the shims), then the rest.
        let everyone = [containerd.pid] + shims + daemons + workers + apps
        for pid in everyone { kill(pid, SIGKILL) }
        #expect(eventually { everyone.allSatisfy { !isAlive($0) } }, "alive: \(everyone.filter(isAlive))")
        // What a reboot empties: this instance's folders on /run and its mounts, the netns, cgroups.
        let runcState = "/run/containerd/runc/\(containerd.namespace)"
        for folder in [runcState, containerd.directory + "/state", layout.runDirectory] {
            for mountPoint in MountPoints.under(folder + "/") { try? MountPoints.unmount(mountPoint) }
            try? FileManager.default.removeItem(atPath: folder)
        }
        for id in [down, running] { unlink(containerd.shimSocket(group: id)) }
        netns.delete()
        let hierarchies = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
        for h in hierarchies {
            for id in [down, running] { _ = rmdir("/sys/fs/cgroup/\(h)/\(containerd.namespace)/\(id)") }
        }
        // The state folder is kept; its image folder was written before the boot.
        try #require(FileManager.default.fileExists(atPath: images + "/inventory.img"), "no images kept")
        let boot = try #require(StaleImages.bootTime())
        var times = [timespec(tv_sec: Int(boot - 60), tv_nsec: 0), timespec(tv_sec: Int(boot - 60), tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, images, &times, 0) == 0)

        // Boot: containerd on the same root.
        let bootedAt = ContinuousClock.now
        try containerd.restart()
        #expect(try containerd.ctr(["task", "ls", "-q"]).trimmed.isEmpty, "containerd resumed a task")
        let records = try containerd.ctr(["container", "ls", "-q"]).stdout
        #expect(records.contains(down) && records.contains(running), "container records: \(records)")
        #expect(try containerd.ctr(["container", "rm", down, running]).status == 0, "old records not removable")
        // A new container of the same id in a new netns (kubelet would use a new id).
        let netns2 = try TestNetns("zpfm-rb2")
        defer { netns2.delete() }
        try startCounter(containerd, netns: netns2, id: down, rootfs: rootfs)
        let serving = ContinuousClock.now - bootedAt
        defer { removeTask(containerd, down) }
        let shim = try #require(shimPid(containerd, group: down))
        #expect(
            containerd.logLines(containing: "removed checkpoint images from before the boot").contains {
                $0.contains(images)
            },
            "the images from before the boot were not removed: \(containerd.log(tail: 30))"
        )
        // It works like any container: its own images in the same folder, restored with its memory.
        try #require(
            waitScaledDown(containerd, netns: netns2, checkpoints: 2),
            "the new container did not scale down: \(containerd.log(tail: 30))"
        )
        #expect(netns2.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 20))")
        #expect(everyone.allSatisfy { !isAlive($0) })
        print(
            "[fault-matrix] \(flavor.name) | simulated reboot (containerd, 2 shims, lazy-pages daemon, CRIU worker, "
                + "app SIGKILLed; /run folders, netns, cgroups emptied; state folder kept) | containerd back, no task "
                + "resumed, old records removable; a new container of the same id answers \(ms(serving)) after "
                + "containerd's start, scales down and restores; the stale BPF pins of the node block nothing | "
                + "images from before the boot removed by the new shim at its start; processes: none"
        )
        removeTask(containerd, down)
        try expectNothingLeft(containerd, netns: netns2, id: down, shim: shim, state: layout.stateDirectory)
    }
}

/// ``StaleImages/sweep(layout:bootTime:)``: only container image folders last modified before the
/// boot go; a folder written since stays, and so does its namespace folder.
@Suite struct StaleImagesTests {
    @Test func foldersFromBeforeTheBoot_areRemoved_othersKept() throws {
        let base = "/tmp/zpstale-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let layout = NodeLayout(runDirectory: base + "/r", stateDirectory: base + "/state")
        let old = layout.imageDirectory(containerdNamespace: "ns1", containerID: "old")
        let current = layout.imageDirectory(containerdNamespace: "ns1", containerID: "current")
        let oldOnly = layout.imageDirectory(containerdNamespace: "ns2", containerID: "old")
        for folder in [old, current, oldOnly] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/pages-1.img"))
        }
        let boot: Int64 = 1_000_000
        for folder in [old, oldOnly] {
            var times = [timespec(tv_sec: Int(boot - 1), tv_nsec: 0), timespec(tv_sec: Int(boot - 1), tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, folder, &times, 0) == 0)
        }
        var times = [timespec(tv_sec: Int(boot), tv_nsec: 0), timespec(tv_sec: Int(boot), tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, current, &times, 0) == 0)
        let removed = StaleImages.sweep(layout: layout, bootTime: boot)
        #expect(Set(removed) == [old, oldOnly])
        #expect(FileManager.default.fileExists(atPath: current + "/pages-1.img"))
        #expect(!FileManager.default.fileExists(atPath: layout.imageDirectory(containerdNamespace: "ns2")))
        #expect(StaleImages.sweep(layout: layout, bootTime: nil).isEmpty, "no boot time: nothing removed")
        #expect(StaleImages.bootTime().map { $0 > 0 } == true)
    }
}

/// The lazy-pages daemon hangs (SIGSTOP) right after a lazy restore of a 256 MiB app answered,
/// while it still pushes the remaining pages: after 10 s without progress the shim kills the
/// container's processes, then the daemon (decision 0054); containerd gets the exit. (Before, the
/// daemon was looked at only when a checkpoint waited for it: 60 s after the checkpoint was asked
/// for, never while traffic kept the container busy.)
@Suite(.serialized) struct LazyPagesHangAfterRestoreTests {
    @Test(arguments: ContainerdFlavor.all)
    func lazyPagesDaemonHangsWhileServing_processesKilledThenTheDaemon(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let nodeConfig = "/tmp/zpfm-hgs-\(UUID().uuidString.prefix(8)).conf"
        try Data("lazy-restore = on\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "fmhgs",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpfm-hgs")
        defer { netns.delete() }
        let eventsFile = containerd.directory + "/events.txt"
        let events = try containerd.startEvents(into: eventsFile)
        defer { containerd.stopEvents(events) }
        let id = "hgs1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs, command: bigCounterServer(mebibytes: 256))
        defer { removeTask(containerd, id) }
        let shim = try #require(shimPid(containerd, group: id))
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = NodeLayout().imageDirectory(containerdNamespace: containerd.namespace, containerID: id)
        var daemon: Int32 = 0
        try #require(
            eventually {
                daemon = processes(matching: ["lazy-pages", images]).first ?? 0
                return daemon != 0
            },
            "no lazy-pages daemon prepared: \(containerd.log(tail: 30))"
        )
        let request = try BackgroundRequest(netns, port: 8080, output: containerd.directory + "/wake.out")
        // The restore answered: the daemon now pushes the rest of the 256 MiB.
        try #require(
            eventually(within: 60, every: 0.001) {
                fileTail(containerd.directory + "/containerd.log", bytes: 4096).contains("restored process")
            },
            "no restore: \(containerd.log(tail: 30))"
        )
        kill(daemon, SIGSTOP)
        let hungAt = ContinuousClock.now
        defer { if isAlive(daemon) { kill(daemon, SIGKILL) } }
        let servedAll = LazyPagesDaemon.logShowsEveryProcessServed(
            text: fileTail(images + "/lazy-pages.log", bytes: 1 << 24)
        )
        try #require(!servedAll, "the daemon had pushed every page before it was stopped: no hang to see")
        let exited = eventually(within: 60) { exitStatus(inEvents: eventsFile, id: id) != nil }
        let recovered = ContinuousClock.now - hungAt
        #expect(exited, "no exit after the daemon hung: \(containerd.log(tail: 30))")
        #expect(exitStatus(inEvents: eventsFile, id: id) == "137")
        #expect(
            !containerd.logLines(containing: "no progress for 10 s (hung)").isEmpty,
            "not reported as hung: \(containerd.log(tail: 30))"
        )
        #expect(eventually { !isAlive(daemon) }, "the hung daemon is still there")
        #expect(eventually { processes(inNetns: netns.path).isEmpty }, "processes left")
        _ = request.finish(within: 30)
        print(
            "[fault-matrix] \(flavor.name) | lazy-pages daemon hangs after the restore answered (SIGSTOP while it pushes "
                + "the rest of 256 MiB) | after 10 s without progress the container's processes are killed, then the "
                + "daemon; containerd gets exit 137 \(ms(recovered)) after the hang (before: only when a checkpoint "
                + "waited 60 s for it) | daemon, processes: none"
        )
        removeTask(containerd, id)
        try expectNothingLeft(containerd, netns: netns, id: id, shim: shim)
    }
}
