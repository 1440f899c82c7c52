import Foundation
import Testing
import ZPTestSupport

@testable import ZPShim

/// The behaviour users rely on while a container is scaled down (product.md), through a real
/// containerd: nginx cycles, probes, exec, kill/delete, failures, pod groups, containerd restarts.
@Suite(.serialized) struct ScaleToZeroBehaviourTests {
    @Test(arguments: ContainerdFlavor.all)
    func nginx_scalesDownAndRestoresWithItsMemory(flavor: ContainerdFlavor) throws {
        let r = try run([TestPaths.packageRoot + "/scripts/rootfs.sh", "nginx"], timeout: 900)
        try #require(r.status == 0, "rootfs.sh nginx: \(r.stderr)")
        let rootfs = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zng")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zng")
        defer { netns.delete() }
        let id = "nginx1"
        // $connection is nginx's connection serial number, a counter in its (shared) memory.
        let conf = containerd.directory + "/zp.conf"
        try Data("server { listen 8080; location / { return 200 \"conn=$connection\\n\"; } }\n".utf8)
            .write(to: URL(fileURLWithPath: conf))
        var args = [
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            "--with-ns", "network:\(netns.path)", "--read-only",
            "--mount", "type=bind,src=\(conf),dst=/etc/nginx/conf.d/zp.conf,options=rbind:ro",
        ]
        for dir in ["/run", "/var/lib/nginx", "/var/log/nginx"] {
            args += ["--mount", "type=tmpfs,src=tmpfs,dst=\(dir),options=nosuid:nodev"]
        }
        let created = try containerd.ctr(args + ["--rootfs", rootfs, id, "/usr/sbin/nginx"])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer { removeTask(containerd, id) }
        func serial() -> Int? {
            guard let body = netns.httpGet(port: 8080), body.hasPrefix("conn=") else { return nil }
            return Int(body.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var last: Int?
        _ = eventually {
            last = serial()
            return last != nil
        }
        try #require(last != nil, "nginx never answered: \(containerd.log(tail: 30))")
        for cycle in 1...5 {
            let down = waitScaledDown(containerd, netns: netns, checkpoints: cycle)
            #expect(down, "cycle \(cycle): not scaled down; log: \(containerd.log(tail: 30))")
            guard down else { return }
            let now = serial()
            // A fresh nginx would start counting again; the restored one continues.
            #expect(now != nil && now! > last!, "cycle \(cycle): conn \(String(describing: now)) after \(last!)")
            last = now ?? last
        }
        let restores = containerd.logLines(containing: "restored process:").compactMap { line in
            line.range(of: "restored process:").map { String(line[$0.lowerBound...].prefix(50)) }
        }
        print("[zpshim-s2z] \(flavor.name) nginx: \(restores.joined(separator: "; "))")
    }

    /// The activator's content detection: a `kube-probe/` request from a process that is not kubelet
    /// (here from inside the pod's netns) is answered without a restore when the activator keeps the
    /// port, i.e. with the listener handover off (by default the handover applies and only kubelet's
    /// own connections, recognised by process, are left to the activator; KubeletIdentificationTests).
    @Test(arguments: ContainerdFlavor.all)
    func probe_whileScaledDown_isAnsweredWithoutRestore(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zpr")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zpr")
        defer { netns.delete() }
        try startCounter(
            containerd,
            netns: netns,
            id: "probe1",
            rootfs: rootfs,
            extra: ["--annotation", "zeropod-swift/listener-handover=false"]
        )
        defer { removeTask(containerd, "probe1") }
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let status = httpStatus(netns, port: 8080, agent: "kube-probe/1.30")
        #expect(status == 204, "probe answer \(String(describing: status))")
        // No restore follows the probe.
        let stayedDown = !eventually(within: 3) { !processes(inNetns: netns.path).isEmpty }
        #expect(stayedDown, "the probe woke the container")
        #expect(containerd.logLines(containing: "restored process:").isEmpty)
        // A real request still restores it, with its memory.
        #expect(netns.httpGet(port: 8080) == "count=2\n")
    }

    @Test(arguments: ContainerdFlavor.all)
    func exec_intoScaledDownContainer_restoresItFirst(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zex")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zex")
        defer { netns.delete() }
        try startCounter(containerd, netns: netns, id: "exec1", rootfs: rootfs)
        defer { removeTask(containerd, "exec1") }
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let exec = try containerd.ctr([
            "task", "exec", "--exec-id", "e1", "exec1", "/bin/sh", "-c", "echo exec-ran-$((6*7))",
        ])
        #expect(exec.status == 0, "exec: \(exec.stderr)\n\(containerd.log(tail: 20))")
        #expect(exec.stdout.contains("exec-ran-42"), "exec stdout: \(exec.stdout)")
        #expect(containerd.logLines(containing: "restored process:").count == 1)
        // The restored process kept its memory.
        #expect(netns.httpGet(port: 8080) == "count=2\n")
        // Once the exec ended it scales down again.
        #expect(
            waitScaledDown(containerd, netns: netns, checkpoints: 2),
            "no second scale-down: \(containerd.log(tail: 30))"
        )
    }

    @Test(arguments: ContainerdFlavor.all)
    func runningExec_pinsTheContainer_untilItEnds(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zpin")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zpin")
        defer { netns.delete() }
        try startCounter(containerd, netns: netns, id: "pin1", rootfs: rootfs)
        defer { removeTask(containerd, "pin1") }
        let exec = try containerd.ctr(["task", "exec", "-d", "--exec-id", "sleeper", "pin1", "/bin/sleep", "8"])
        try #require(exec.status == 0, "exec: \(exec.stderr)")
        // Four times the scale-down duration: no checkpoint while the exec runs.
        let stayedUp = !eventually(within: 6) { !containerd.logLines(containing: "checkpointing done").isEmpty }
        #expect(stayedUp, "scaled down while an exec ran")
        #expect(!processes(inNetns: netns.path).isEmpty)
        // After the exec ended, it scales down.
        #expect(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "no scale-down after the exec: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=2\n")
    }

    @Test(arguments: ContainerdFlavor.all)
    func killAndDelete_whileScaledDown_leaveNothingBehind(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zkd")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zkd")
        defer { netns.delete() }
        let id = "kill1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        let socket = containerd.shimSocket(group: id)
        let shimPid = try #require(processes(matching: ["containerd-shim-zeropod-v2", "-socket", socket]).first)
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let images = "/var/lib/zeropod-swift/i/\(containerd.namespace)/\(id)"
        #expect(FileManager.default.fileExists(atPath: images + "/zeropod-checkpoint.json"))
        // State, Pids while scaled down: running, the last pid.
        let row = taskRow(containerd, id)
        #expect(row?.status == "RUNNING")
        let ps = try containerd.ctr(["task", "ps", id])
        #expect(ps.status == 0 && ps.stdout.contains("\(row?.pid ?? -1)"), "task ps: \(ps.stdout) \(ps.stderr)")

        #expect(try containerd.ctr(["task", "kill", "-s", "SIGKILL", id]).status == 0)
        #expect(
            eventually { taskRow(containerd, id)?.status == "STOPPED" },
            "task ls: \(String(describing: taskRow(containerd, id)))"
        )
        #expect(containerd.logLines(containing: "restored process:").isEmpty, "kill restored the container")
        let rm = try containerd.ctr(["task", "rm", id])
        #expect(rm.status == 0, "task rm: \(rm.stderr)")
        #expect(try containerd.ctr(["c", "rm", id]).status == 0)

        #expect(processes(inNetns: netns.path).isEmpty)
        #expect(eventually { !FileManager.default.fileExists(atPath: images) }, "images left in \(images)")
        #expect(
            eventually { !isAlive(shimPid) },
            "shim \(shimPid) still running (holds activator sockets and BPF links)"
        )
        #expect(eventually { !FileManager.default.fileExists(atPath: socket) }, "shim socket \(socket) left behind")
        var st = stat()
        if stat(netns.path, &st) == 0 {
            let links = (try? run(["bpftool", "-j", "link", "show"]).stdout) ?? ""
            #expect(!links.contains("\"netns_ino\":\(st.st_ino)"), "a BPF link of the pod netns is left: \(links)")
        }
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        #expect(!mounts.contains(containerd.directory), "mounts left")
        #expect(!FileManager.default.fileExists(atPath: "/run/containerd/runc/\(containerd.namespace)/\(id)"))
    }

    // The checkpoint failure path (keeps serving, then scales down by kill) is tested with real CRIU
    // failures in FaultMatrixTests (an app holding a perf event fd, a full disk, CRIU killed mid-dump).

    @Test(arguments: ContainerdFlavor.all)
    func restoreFailure_comesBackByColdStart(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zrf")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zrf")
        defer { netns.delete() }
        let id = "rsfail1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        // Corrupt the image: every CRIU image file emptied.
        let images = "/var/lib/zeropod-swift/i/\(containerd.namespace)/\(id)"
        for file in (try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [] where file.hasSuffix(".img") {
            try Data().write(to: URL(fileURLWithPath: images + "/" + file))
        }
        #expect(netns.httpGet(port: 8080) == "count=1\n", "log: \(containerd.log(tail: 30))")
        #expect(!containerd.logLines(containing: "restore failed").isEmpty)
        #expect(!containerd.logLines(containing: "cold started process").isEmpty)
        #expect(taskRow(containerd, id)?.status == "RUNNING")
        #expect(!FileManager.default.fileExists(atPath: images + "/inventory.img"), "corrupt image kept")
    }

    @Test(arguments: ContainerdFlavor.all)
    func podGroup_onlyTheNamedContainerScalesDown(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zgr")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zgr")
        defer { netns.delete() }
        let group = "grp-\(UUID().uuidString.prefix(6).lowercased())"
        // Ports from ports-map (no discovery) for the named container.
        let common = [
            "--annotation", "io.containerd.runc.v2.group=\(group)", "--annotation",
            "zeropod.ctrox.dev/container-names=web",
            "--annotation", "zeropod.ctrox.dev/ports-map=web=8080,8090;side=8081",
        ]
        try startCounter(
            containerd,
            netns: netns,
            id: "web",
            rootfs: rootfs,
            extra: common + ["--annotation", "io.kubernetes.cri.container-name=web"]
        )
        defer { removeTask(containerd, "web") }
        try startCounter(
            containerd,
            netns: netns,
            id: "side",
            rootfs: rootfs,
            extra: common + ["--annotation", "io.kubernetes.cri.container-name=side"],
            command: "exec httpd -f -p 8081 -h /www",
            port: 8081
        )
        defer { removeTask(containerd, "side") }
        // One shim serves the group.
        #expect(
            processes(matching: ["containerd-shim-zeropod-v2", "-socket", containerd.shimSocket(group: group)]).count
                == 1
        )
        let webPid = try #require(taskRow(containerd, "web")?.pid)
        let sidePid = try #require(taskRow(containerd, "side")?.pid)
        #expect(
            eventually(within: 60) {
                containerd.logLines(containing: "checkpointing done").count >= 1 && !isAlive(webPid)
            },
            "web did not scale down: \(containerd.log(tail: 30))"
        )
        let sideStayed = !eventually(within: 4) { !isAlive(sidePid) }
        #expect(sideStayed, "side was scaled down")
        #expect(netns.httpGet(port: 8081) == "zeropod busybox\n")
        #expect(netns.httpGet(port: 8080) == "count=2\n")
        #expect(containerd.logLines(containing: "checkpointing done").allSatisfy { !$0.contains("side") })
        // The ports came from ports-map (8090 is not listened on, discovery would not find it).
        #expect(
            !containerd.logLines(containing: "ports=[8080, 8090]").isEmpty,
            "log: \(containerd.logLines(containing: "armed"))"
        )
    }

    @Test(arguments: ContainerdFlavor.all)
    func malformedAnnotation_failsCreateWithTheConfigError(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zbad")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zbad")
        defer { netns.delete() }
        let created = try containerd.ctr(
            [
                "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
                "zeropod.ctrox.dev/scaledown-duration=soon",
                "--with-ns", "network:\(netns.path)", "--rootfs", rootfs, "bad1", "/bin/true",
            ])
        defer { removeTask(containerd, "bad1") }
        #expect(created.status != 0)
        #expect(
            created.stderr.contains("zeropod.ctrox.dev/scaledown-duration") && created.stderr.contains("soon"),
            "ctr run stderr: \(created.stderr)"
        )
    }

    @Test(arguments: ContainerdFlavor.all)
    func containerdRestart_whileScaledDown_nextRequestRestores(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zrs")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zrs")
        defer { netns.delete() }
        let id = "restart1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        try containerd.restart()
        #expect(
            eventually { taskRow(containerd, id)?.status == "RUNNING" },
            "after restart: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=2\n", "log: \(containerd.log(tail: 30))")
        // containerd still drives the task: exec and kill work.
        let exec = try containerd.ctr(["task", "exec", "--exec-id", "e1", id, "/bin/true"])
        #expect(exec.status == 0, "exec after restart: \(exec.stderr)")
        let shimPid = processes(matching: ["containerd-shim-zeropod-v2", "-socket", containerd.shimSocket(group: id)])
            .first
        #expect(try containerd.ctr(["task", "kill", "-s", "SIGKILL", id]).status == 0)
        #expect(eventually { taskRow(containerd, id)?.status == "STOPPED" }, "after kill: \(containerd.log(tail: 30))")
        let rm = try containerd.ctr(["task", "rm", id])
        #expect(rm.status == 0, "task rm: \(rm.stderr)")
        if let shimPid {
            #expect(
                eventually { !isAlive(shimPid) },
                "shim \(shimPid) outlived its last task: \(containerd.logLines(containing: "zeropod-v2").suffix(15).joined(separator: "\n"))"
            )
        }
    }

    /// A restored process that ends by itself (no kill from containerd, so no runc call that
    /// would wake the shim's reaper) is reaped and reported: the task shows STOPPED.
    @Test(arguments: ContainerdFlavor.all)
    func restoredProcess_exitingByItself_isReported(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zex")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zex")
        defer { netns.delete() }
        let id = "selfexit1"
        // Serves two requests, then exits with status 7.
        let server = """
            n=0; while [ $n -lt 2 ]; do n=$((n+1)); \
            printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\ncount=%d\\n' $((7+${#n})) $n | nc -l -p 8080 >/dev/null; done; exit 7
            """
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            "--with-ns", "network:\(netns.path)", "--rootfs", rootfs, id, "/bin/sh", "-c", server,
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer { removeTask(containerd, id) }
        #expect(eventually { netns.httpGet(port: 8080) == "count=1\n" })
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        #expect(netns.httpGet(port: 8080) == "count=2\n", "the restored server answers once more")
        #expect(
            eventually(within: 30) { taskRow(containerd, id)?.status == "STOPPED" },
            "the restored process exited by itself; containerd still sees \(String(describing: taskRow(containerd, id))); log: \(containerd.log(tail: 20))"
        )
        #expect(processes(inNetns: netns.path).isEmpty, "no process (or zombie) left in the pod's netns")
    }

    @Test(arguments: ContainerdFlavor.all)
    func outputAfterRestore_reachesTheStdoutFIFO(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "s2zio")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zio")
        defer { netns.delete() }
        let id = "fifo1"
        // Attached `ctr run`: the task's stdout is a FIFO that ctr reads and copies to its own stdout.
        let outFile = containerd.directory + "/ctr-run.out"
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        let ctr = Process()
        ctr.executableURL = URL(fileURLWithPath: flavor.binDirectory + "/ctr")
        ctr.arguments = [
            "-a", containerd.socket, "-n", containerd.namespace, "run", "--rm", "--runtime", "io.containerd.zeropod.v2",
            "--annotation", "zeropod.ctrox.dev/scaledown-duration=2s", "--with-ns", "network:\(netns.path)",
            "--rootfs", rootfs, id, "/bin/sh", "-c", counterServer,
        ]
        ctr.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outFile))
        ctr.standardError = FileHandle.nullDevice
        ctr.standardInput = FileHandle.nullDevice
        try ctr.run()
        defer {
            removeTask(containerd, id)
            if ctr.isRunning { kill(ctr.processIdentifier, SIGKILL) }
        }
        func output() -> String { (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "" }
        #expect(eventually { netns.httpGet(port: 8080) == "count=1\n" })
        for cycle in 1...2 {
            #expect(
                waitScaledDown(containerd, netns: netns, checkpoints: cycle),
                "not scaled down: \(containerd.log(tail: 30))"
            )
            #expect(netns.httpGet(port: 8080) == "count=\(cycle + 1)\n")
            // The loop prints served-N when it starts listening for request N: after the restore.
            #expect(
                eventually { output().contains("served-\(cycle + 2)") },
                "cycle \(cycle): ctr's stdout: \(output())"
            )
        }
    }
}
