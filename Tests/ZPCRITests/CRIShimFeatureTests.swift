import Foundation
import Glibc
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// ContainerStats with a retry while the app may just be scaling down: returns the stats taken
/// while the shim said RUNNING before and after the call.
func statsWhileRunning(_ bed: CRITestBed, socket: String, id: String, ip: String) async throws -> CRI.ContainerStats? {
    var taken: CRI.ContainerStats?
    _ = await eventuallyAsync(within: 60, every: 0.2) {
        _ = try? await appRequest(ip)  // activity: the app stays up for a scale-down duration
        guard await CRIPodTests.shimStatus(socket, id)?.lifecyclePhase == .running else { return false }
        let stats = try? await bed.client.containerStats(id)
        guard await CRIPodTests.shimStatus(socket, id)?.lifecyclePhase == .running else { return false }
        taken = stats
        return stats != nil
    }
    return taken
}

/// Shell text that waits (up to 5 s) until the terminal has the given size, without writing the
/// size literally (the terminal echoes input; a test looks for the size in the output).
func waitForSize(rows: Int, columns: Int) -> String {
    "i=0; while [ \"$(stty size)\" != \"$((\(rows)*1)) $((\(columns)*1))\" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
}

/// Waits until the shim reports container `id` SCALED_DOWN with a checkpoint newer than `after`.
/// - Returns: the status seen.
func waitScaledDown(_ socket: String, _ id: String, after: ProtobufTimestamp?) async -> StatusAPI.ContainerStatus? {
    var seen: StatusAPI.ContainerStatus?
    _ = await eventuallyAsync(within: 90, every: 0.1) {
        seen = await CRIPodTests.shimStatus(socket, id)
        return seen?.lifecyclePhase == .scaledDown && seen?.lastCheckpoint?.finishedAt != after
    }
    return seen?.lifecyclePhase == .scaledDown ? seen : nil
}

/// Issue 18 items 3-5 through containerd's CRI plugin, as kubelet drives it: ContainerStats,
/// terminals (tty containers, terminal exec and attach, across scale-downs) and containerd's runc
/// options (decisions 0042, 0043).
@Suite(.serialized, .enabled(if: criTestBedAvailable, "needs root, runc, CRIU, gcc and the CNI plugins (make setup)"))
struct CRIShimFeatureTests {
    @Test(arguments: ContainerdFlavor.all)
    func containerStats_realWhileRunning_smallWhileScaledDown_comparedWithRunc(flavor: ContainerdFlavor) async throws {
        try await withCRITestBed(flavor: flavor, tag: "cristats") { bed in
            print(
                "[zpcri] \(flavor.name): cgroup mode of this host: \(CgroupHostMode.current) (containerd's runc shim reports \(CgroupHostMode.current == .unified ? "v2" : "v1") metrics)"
            )
            let pod = bed.pod(
                "stats-\(uniqueName("s"))",
                handler: CRITestBed.zeropodHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "3s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080]
            )
            let (podID, ip, appID, _) = try await startCounterPod(bed, pod)
            let control = bed.pod("stats-\(uniqueName("r"))", handler: CRITestBed.runcHandler, containerPorts: [8080])
            let (controlPodID, controlIP, controlID, _) = try await startCounterPod(bed, control)
            let socket = CRIPodTests.statusSocket(bed, podID: podID)

            let running = try #require(try await statsWhileRunning(bed, socket: socket, id: appID, ip: ip))
            for _ in 0..<3 { _ = try await appRequest(controlIP) }
            let runc = try #require(try await bed.client.containerStats(controlID))
            print("[zpcri] \(flavor.name) ContainerStats running: zeropod \(running)")
            print("[zpcri] \(flavor.name) ContainerStats running: runc    \(runc)")
            #expect(running.id == appID && running.hasCPU && running.hasMemory && running.hasWritableLayer)
            // Real figures: the nc loop has used some CPU (more than the 1 µs of the scaled-down
            // figure) and has a working set of at least a page.
            #expect(
                (running.cpuUsageCoreNanoSeconds ?? 0) > 1_000_000,
                "cpu \(String(describing: running.cpuUsageCoreNanoSeconds))"
            )
            #expect((running.workingSetBytes ?? 0) > 4096, "working set \(String(describing: running.workingSetBytes))")
            #expect(runc.hasCPU && runc.hasMemory && (runc.cpuUsageCoreNanoSeconds ?? 0) > 1_000_000)
            // The same fields as the runc control, within an order of magnitude (same workload).
            if let ours = running.workingSetBytes, let theirs = runc.workingSetBytes {
                #expect(ours < theirs * 10 && theirs < ours * 10, "working sets \(ours) vs \(theirs)")
            }
            #expect((running.memoryUsageBytes != nil) == (runc.memoryUsageBytes != nil), "usage_bytes filled alike")
            #expect((running.rssBytes != nil) == (runc.rssBytes != nil), "rss_bytes filled alike")

            // Scaled down: 1 µs of CPU and 1 byte (kubectl top shows 0m 0Mi, not an error), and
            // asking does not wake the app.
            let scaledDown = await waitScaledDown(socket, appID, after: nil)
            let seen = await CRIPodTests.shimStatus(socket, appID)
            let down = try #require(
                scaledDown,
                "never scaled down; shim status \(String(describing: seen)); log: \(bed.containerd.log(tail: 40))"
            )
            let small = try #require(try await bed.client.containerStats(appID))
            let listed = try await bed.client.listContainerStats(id: appID)
            print("[zpcri] \(flavor.name) ContainerStats scaled down: \(small); ListContainerStats: \(listed)")
            // The cumulative CPU time stays at the last real figure (a counter that went back to
            // 1 µs made containerd 1.6 compute usage_nano_cores from an unsigned underflow).
            let lastReal = running.cpuUsageCoreNanoSeconds ?? 0
            #expect(
                small.hasCPU && (small.cpuUsageCoreNanoSeconds ?? 0) >= lastReal && small.hasMemory
                    && small.workingSetBytes == 1,
                "scaled down: \(small), last real cpu \(lastReal)"
            )
            #expect(
                (small.cpuUsageNanoCores ?? 0) < 1_000_000_000,
                "usage_nano_cores while down: \(String(describing: small.cpuUsageNanoCores))"
            )
            #expect(
                listed.count == 1 && listed.first?.cpuUsageCoreNanoSeconds == small.cpuUsageCoreNanoSeconds
                    && listed.first?.workingSetBytes == 1
            )
            #expect((listed.first?.cpuUsageNanoCores ?? 0) < 1_000_000_000)
            let podStats = try await bed.client.listContainerStats(podID: podID)
            #expect(podStats.map(\.id) == [appID], "crictl stats --pod: \(podStats)")
            let after = await CRIPodTests.shimStatus(socket, appID)
            #expect(
                after?.lifecyclePhase == .scaledDown && after?.lastRestore?.finishedAt == down.lastRestore?.finishedAt,
                "stats woke the app"
            )
            // Back up: real figures again, from the restored process's cgroups.
            let restored = try #require(try await statsWhileRunning(bed, socket: socket, id: appID, ip: ip))
            print("[zpcri] \(flavor.name) ContainerStats after the restore: \(restored)")
            #expect((restored.cpuUsageCoreNanoSeconds ?? 0) > 1_000_000 && (restored.workingSetBytes ?? 0) > 4096)

            try await bed.removePod(controlPodID)
            try await CRIPodTests().assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID],
                shimName: "containerd-shim-zeropod-v2"
            )
        }
    }

    @Test(arguments: ContainerdFlavor.all)
    func ttyContainer_terminalExecWakesIt_attachFollowsTheRestoredTerminal(flavor: ContainerdFlavor) async throws {
        try await withCRITestBed(flavor: flavor, tag: "critty") { bed in
            let pod = bed.pod(
                "tty-\(uniqueName("t"))",
                handler: CRITestBed.zeropodHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080]
            )
            let (podID, ip) = try await bed.runPodSandbox(pod)
            // `kubectl run -it`: stdin and a terminal; the shell on the terminal is the init, the
            // counter server runs beside it.
            var config = pod.containerConfig(
                "app",
                image: bed.busyboxImage,
                command: ["/bin/sh", "-c", "(\(counterApp)) & exec /bin/sh"],
                tty: true,
                stdin: true
            )
            config.stdinOnce = false
            let appID = try await bed.startContainer(config, in: podID, of: pod)
            var last = 0
            #expect(
                await eventuallyAsync(within: 60) {
                    last = (try? await appRequest(ip)) ?? 0
                    return last > 0
                },
                "the tty pod's app never answered; log: \(bed.containerd.log(tail: 30))"
            )
            let socket = CRIPodTests.statusSocket(bed, podID: podID)
            let status = try await bed.client.containerStatus(appID)
            #expect(status.state == .running)

            // Attach to the running init's terminal: input reaches the shell, output comes back.
            let first = try await bed.client.attach(appID, tty: true, stdin: true, stderr: false)
            let attached = try await streamingExec(
                url: first,
                input: Array("echo attached-$((40+2))\n".utf8),
                until: "attached-42"
            )
            #expect(attached.stdoutText.contains("attached-42"), "attach: \(attached.stdoutText.debugDescription)")

            // Scaled down with its terminal (CRIU dumps the pty whose master the shim holds).
            var down = try #require(
                await waitScaledDown(socket, appID, after: nil),
                "the tty container never scaled down; log: \(bed.containerd.log(tail: 40))"
            )
            // `kubectl exec -it` on the scaled-down container: the exec restores it first, then runs
            // on a terminal of its own with the requested size.
            let url = try await bed.client.exec(appID, ["/bin/sh"], tty: true, stdin: true, stderr: false)
            // (The size is awaited inside: containerd applies the resize once the exec started. No
            // literal of the expected text in the input, which the terminal echoes.)
            let terminal = try await streamingExec(
                url: url,
                input: Array(
                    (waitForSize(rows: 30, columns: 100)
                        + "stty size; tty; echo x-$((6*7)); exit 3\n").utf8
                ),
                resize: (columns: 100, rows: 30)
            )
            print(
                "[zpcri] \(flavor.name) terminal exec on a scaled-down tty container: \(terminal.stdoutText.debugDescription) status \(terminal.status)"
            )
            #expect(
                terminal.stdoutText.contains("30 100") && terminal.stdoutText.contains("/dev/pts/")
                    && terminal.stdoutText.contains("x-42"),
                "\(terminal.stdoutText.debugDescription)"
            )
            #expect(terminal.exitCode == 3, "status: \(terminal.status)")
            var restored: StatusAPI.ContainerStatus?
            #expect(
                await eventuallyAsync(within: 30, every: 0.05) {
                    restored = await CRIPodTests.shimStatus(socket, appID)
                    return restored?.lifecyclePhase == .running && restored?.lastRestore != nil
                },
                "the terminal exec did not restore the app"
            )
            #expect(try await appRequest(ip) == last + 1, "memory lost across the tty container's restore")
            last += 1

            // The init's terminal after the restore is CRIU's new pty: attach input and a resize
            // reach the restored shell.
            let second = try await bed.client.attach(appID, tty: true, stdin: true, stderr: false)
            let sized = try await streamingExec(
                url: second,
                input: Array((waitForSize(rows: 40, columns: 120) + "stty size\n").utf8),
                resize: (columns: 120, rows: 40),
                until: "40 120"
            )
            #expect(sized.stdoutText.contains("40 120"), "attach after restore: \(sized.stdoutText.debugDescription)")

            // A second cycle, woken by a request this time; the terminal follows again.
            down = try #require(
                await waitScaledDown(socket, appID, after: down.lastCheckpoint?.finishedAt),
                "no second scale-down"
            )
            #expect(try await appRequest(ip) == last + 1, "memory lost in the second cycle")
            let third = try await bed.client.attach(appID, tty: true, stdin: true, stderr: false)
            let again = try await streamingExec(
                url: third,
                input: Array("echo again-$((1+1)); stty size\n".utf8),
                until: "again-2"
            )
            #expect(
                again.stdoutText.contains("again-2"),
                "attach after the second restore: \(again.stdoutText.debugDescription)"
            )
            print(
                "[zpcri] \(flavor.name) tty container: attach after two restores: \(again.stdoutText.debugDescription)"
            )

            try await CRIPodTests().assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID],
                shimName: "containerd-shim-zeropod-v2"
            )
        }
    }
}

/// containerd's runc options through CRI (decision 0042): our shim configured as the installer
/// does (`runtime_type = "io.containerd.runc.v2"`, `runtime_path`), so the CRI plugin passes the
/// handler's options. runc is a wrapper that records every argv and runs the real runc; for
/// `--systemd-cgroup` (no systemd as init here) it drops the flag and rewrites the bundle's
/// `slice:prefix:name` cgroupsPath to the folder runc's systemd driver would make, so the real
/// runc (cgroupfs) places the container where systemd would.
@Suite(.serialized, .enabled(if: criTestBedAvailable, "needs root, runc, CRIU, gcc and the CNI plugins (make setup)"))
struct RuncOptionsCRITests {
    /// The wrapper: logs its argv as one JSON line, emulates the systemd driver's placement.
    static let wrapper = """
        #!/usr/bin/python3
        import json, os, sys
        args = sys.argv[1:]
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "runc-argv.log"), "a") as log:
            log.write(json.dumps(args) + "\\n")
        if "--systemd-cgroup" in args:
            args.remove("--systemd-cgroup")
            if "create" in args and "--bundle" in args:
                bundle = args[args.index("--bundle") + 1]
                with open(bundle + "/config.json") as f:
                    config = json.load(f)
                path = config.get("linux", {}).get("cgroupsPath", "")
                if path.count(":") == 2:
                    slice_, prefix, name = path.split(":")
                    parts = slice_[: -len(".slice")].split("-")
                    folder = "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))
                    config["linux"]["cgroupsPath"] = folder + "/" + prefix + "-" + name + ".scope"
                    with open(bundle + "/config.json", "w") as f:
                        json.dump(config, f)
        os.execv("/usr/sbin/runc", ["runc"] + args)
        """

    /// containerd 2.x only: containerd 1.6.20's CRI ignores `runtime_path` (containerd issue 8207,
    /// seen here: the handler ran containerd-shim-runc-v2), so its runc options never reach our shim.
    @Test(arguments: ContainerdFlavor.all.filter { $0.majorVersion >= 2 })
    func handlerOptions_reachRunc_pipes_shimCgroup_andTheRestorePlacement(flavor: ContainerdFlavor) async throws {
        let shimCgroup = "/" + uniqueName("zpcri-shim")
        let handlers: @Sendable (String) -> [CRITestBed.Handler] = { directory in
            [
                .zeropodAsInstalled(
                    name: "zeropod-opts",
                    options: [
                        "BinaryName": "\"\(directory)/runc-wrapper\"", "Root": "\"\(directory)/runc-opts\"",
                        "SystemdCgroup": "true", "NoPivotRoot": "true", "NoNewKeyring": "true",
                        "IoUid": "4242", "IoGid": "4343", "ShimCgroup": "\"\(shimCgroup)\"",
                    ]
                ),
                .zeropodAsInstalled(name: "zeropod-refused", options: ["CriuWorkPath": "\"/var/lib/zp-criu-work\""]),
            ]
        }
        try await withCRITestBed(flavor: flavor, tag: "criopts", handlers: handlers) { bed in
            let directory = bed.containerd.directory
            try Data(Self.wrapper.utf8).write(to: URL(fileURLWithPath: directory + "/runc-wrapper"))
            chmod(directory + "/runc-wrapper", 0o755)
            let v1 = bed.cgroupHierarchies().filter { $0 != "/sys/fs/cgroup" && $0 != "/sys/fs/cgroup/unified" }
            for h in v1 {
                mkdir(h + shimCgroup, 0o755)
                // A new cpuset cgroup takes no process until it has CPUs and memory nodes (ENOSPC).
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let value = try? String(contentsOfFile: h + "/" + file, encoding: .utf8) {
                        try? value.write(toFile: h + shimCgroup + "/" + file, atomically: false, encoding: .utf8)
                    }
                }
            }
            defer { for h in v1 { rmdir(h + shimCgroup) } }

            let pod = bed.pod(
                "opts-\(uniqueName("o"))",
                handler: "zeropod-opts",
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080],
                systemdCgroups: true
            )
            let (podID, ip, appID, firstCount) = try await startCounterPod(bed, pod)
            let exec = try await bed.client.execSync(appID, ["/bin/sh", "-c", "echo opts"], timeout: 60)
            #expect(exec.stdoutText == "opts\n")

            // What reached runc: every call with Root (+ namespace) and --systemd-cgroup, the
            // creates with --no-pivot and --no-new-keyring, through BinaryName.
            let calls = try String(contentsOfFile: directory + "/runc-argv.log", encoding: .utf8).split(separator: "\n")
                .compactMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
            let root = directory + "/runc-opts/" + CRITestBed.criNamespace
            let subcommands = calls.map { $0.first { !$0.hasPrefix("-") && !$0.hasPrefix("/") && $0 != "json" } ?? "?" }
            print("[zpcri] \(flavor.name) runc calls through BinaryName: \(subcommands.joined(separator: " "))")
            print("[zpcri] \(flavor.name) a create: \(calls.first { $0.contains("create") } ?? [])")
            #expect(calls.count >= 5 && ["create", "start", "exec"].allSatisfy(subcommands.contains), "\(subcommands)")
            for call in calls {
                #expect(Array(call.prefix(2)) == ["--root", root] && call.contains("--systemd-cgroup"), "\(call)")
            }
            let creates = calls.filter { $0.contains("create") }
            #expect(creates.count >= 2, "sandbox and app: \(creates)")
            for create in creates {
                #expect(create.contains("--no-pivot") && create.contains("--no-new-keyring"), "\(create)")
            }
            #expect(FileManager.default.fileExists(atPath: "\(root)/\(appID)/state.json"), "runc state under Root")
            #expect(!FileManager.default.fileExists(atPath: "/run/containerd/runc/k8s.io/\(appID)"))

            // Placement as systemd's driver would: the scope in the pod's expanded slice.
            let pids = bed.processes(ofContainer: appID, in: pod)
            #expect(!pids.isEmpty, "no process in \(pod.containerCgroupFolder(appID))")
            // IoUid/IoGid: the app's stdio pipes.
            if let pid = pids.first {
                var st = stat()
                // The shim gave them 4242:4343; runc's init then sets the owner to the container's
                // user (root here) and keeps the group (runc's fixStdioPermissions), as it does
                // for containerd-shim-runc-v2's pipes.
                #expect(
                    stat("/proc/\(pid)/fd/1", &st) == 0 && st.st_uid == 0 && st.st_gid == 4343,
                    "stdout pipe owner \(st.st_uid):\(st.st_gid)"
                )
            }
            // ShimCgroup: the shim moved into it at start.
            let shim = try #require(processes(matching: ["containerd-shim-zeropod-v2", bed.containerd.socket]).first)
            let shimCgroups = (try? String(contentsOfFile: "/proc/\(shim)/cgroup", encoding: .utf8)) ?? ""
            #expect(shimCgroups.contains(":memory:\(shimCgroup)\n"), "shim cgroups: \(shimCgroups)")

            // A scale-down and a restore without runc: the restored process is where runc put the
            // container, in every hierarchy runc recorded.
            let socket = CRIPodTests.statusSocket(bed, podID: podID)
            _ = try #require(
                await waitScaledDown(socket, appID, after: nil),
                "never scaled down; \(bed.containerd.log(tail: 30))"
            )
            #expect(bed.processes(ofContainer: appID, in: pod).allSatisfy { commandName(of: $0) == "criu" })
            #expect(try await appRequest(ip) == firstCount + 1, "memory across the restore")
            // The request may be answered before the shim has recorded the restore (the handover
            // listeners close at CRIU's post-resume, decision 0046): runc's state is read after it.
            #expect(
                await eventuallyAsync(within: 30, every: 0.05) {
                    let status = await CRIPodTests.shimStatus(socket, appID)
                    return status?.lifecyclePhase == .running && status?.lastRestore != nil
                },
                "the shim never reported the restore"
            )
            let stateData = try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(appID)/state.json"))
            let state = try #require(try JSONSerialization.jsonObject(with: stateData) as? [String: Any])
            let restoredPID = Int32((state["init_process_pid"] as? Int) ?? 0)
            let recorded = (state["cgroup_paths"] as? [String: String]) ?? [:]
            let now = ProcessCgroups.folders(
                procCgroup: try String(contentsOfFile: "/proc/\(restoredPID)/cgroup", encoding: .utf8),
                mounts: try MountInfo.read()
            )
            print(
                "[zpcri] \(flavor.name) restored init \(restoredPID): runc recorded \(recorded.count) cgroups, e.g. memory \(recorded["memory"] ?? "-")"
            )
            #expect(recorded["memory"]?.hasSuffix(pod.containerCgroupFolder(appID)) == true)
            for (controller, folder) in recorded where !folder.isEmpty {
                #expect(
                    now[controller] == folder,
                    "\(controller): restored in \(now[controller] ?? "-"), runc put it in \(folder)"
                )
            }

            // An option the shim cannot honour is refused with its name (the sandbox's task fails).
            let refused = bed.pod("refused-\(uniqueName("x"))", handler: "zeropod-refused")
            await #expect {
                _ = try await bed.runPodSandbox(refused)
            } throws: { "\($0)".contains("CriuWorkPath /var/lib/zp-criu-work") && "\($0)".contains("not supported") }

            try await CRIPodTests().assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID],
                shimName: "containerd-shim-zeropod-v2"
            )
            #expect(
                ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).isEmpty,
                "runc state left under Root"
            )
        }
    }
}
