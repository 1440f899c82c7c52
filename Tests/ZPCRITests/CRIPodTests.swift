import Foundation
import Glibc
import NIOPosix
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// A shell loop that keeps a request counter in its own memory and serves it over HTTP with
/// busybox nc on port 8080: the count survives a checkpoint and restore only if the memory does.
let counterApp = """
    n=0; while true; do n=$((n+1)); \
    printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\ncount=%d\\n' $((7+${#n})) $n | nc -l -p 8080 >/dev/null; done
    """

/// Everything a CRI end-to-end test needs: root, both containerd versions, runc, CRIU and the CNI
/// plugins, all installed by `make setup`.
let criTestBedAvailable =
    Privileges.isRoot && Privileges.hasTool("/usr/sbin/runc") && Privileges.hasTool("/usr/local/sbin/criu")
    && Privileges.hasTool("/usr/lib/cni/bridge") && Privileges.hasTool("/usr/lib/cni/host-local")
    && Privileges.hasTool("gcc")

/// The count in an answer of ``counterApp``, or nil.
func count(in body: String?) -> Int? {
    body.flatMap { $0.split(separator: "=").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
}

/// A plain GET from the node to the app (not a probe: another user agent); the count it answered.
/// Retried for up to 10 s while the connection fails: between two answers the nc loop does not
/// listen for a moment.
func appRequest(_ ip: String) async throws -> Int? {
    var body: String?
    _ = await eventuallyAsync(within: 10) {
        body = try? await onThread {
            try KubeletProbe.http(ip: ip, port: 8080, userAgent: "zpcri-client/1", timeout: 20).body
        }
        return body != nil
    }
    return count(in: body)
}

/// Kubelet's steps for the one-container counter pod: RunPodSandbox, CreateContainer and
/// StartContainer, then requests until the app answers (60 s).
/// - Returns: the sandbox id, the pod IP, the container id and the count the app answered.
/// - Throws: ``GRPCCallError`` from the CRI, ``LabError`` when the app never answers.
func startCounterPod(
    _ bed: CRITestBed,
    _ pod: KubeletPod
) async throws -> (podID: String, ip: String, appID: String, count: Int) {
    let (podID, ip) = try await bed.runPodSandbox(pod)
    let appID = try await bed.startContainer(
        pod.containerConfig("app", image: bed.busyboxImage, command: ["/bin/sh", "-c", counterApp]),
        in: podID,
        of: pod
    )
    var count = 0
    _ = await eventuallyAsync(within: 60) {
        count = (try? await appRequest(ip)) ?? 0
        return count > 0
    }
    guard count > 0 else {
        throw LabError("the app of \(pod.name) never answered at \(ip):8080; log: \(bed.containerd.log(tail: 30))")
    }
    return (podID, ip, appID, count)
}

/// `body` on a thread of its own, its outcome as a `Result` (for messages that show the error).
func onThreadResult<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async -> Result<T, any Error> {
    do { return .success(try await onThread(body)) } catch { return .failure(error) }
}

/// A process's command name (`/proc/PID/comm`), or "".
func commandName(of pid: Int32) -> String {
    ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(
        in: .whitespacesAndNewlines
    )
}

/// The inode of a process's network namespace, or nil.
func netnsInode(ofProcess pid: Int32) -> UInt64? {
    var st = stat()
    return stat("/proc/\(pid)/ns/net", &st) == 0 ? UInt64(st.st_ino) : nil
}

/// Through containerd's CRI plugin only, the way kubelet drives it (issue 18): a one-container pod
/// with the `zeropod` handler, and the same pod with the `runc` handler as the control.
@Suite(.serialized, .enabled(if: criTestBedAvailable, "needs root, runc, CRIU, gcc and the CNI plugins (make setup)"))
struct CRIPodTests {
    /// The shim's status socket for the pod `podID` of `bed` (the shim serves a pod's group,
    /// keyed by the CRI sandbox id).
    static func statusSocket(_ bed: CRITestBed, podID: String) -> String {
        NodeLayout().statusSocket(
            forShimSocket: StartCommand.socketPath(
                containerdAddress: bed.containerd.socket,
                namespace: CRITestBed.criNamespace,
                group: podID
            )
        )
    }

    /// The container's status as the shim reports it, or nil when the shim does not answer.
    static func shimStatus(_ socket: String, _ id: String) async -> StatusAPI.ContainerStatus? {
        guard
            let client = try? await ShimStatusClient.connect(
                socketPath: socket,
                group: MultiThreadedEventLoopGroup.singleton
            )
        else { return nil }
        let status = try? await client.status(id: id)
        await client.close()
        return status
    }

    @Test(arguments: ContainerdFlavor.all)
    func zeropodPod_scalesDownAndBackFiveTimes_withItsMemory_probesAnsweredWhileDown(
        flavor: ContainerdFlavor
    ) async throws {
        try await withCRITestBed(flavor: flavor, tag: "cri") { bed in
            let (runtimeName, runtimeVersion, _) = try await bed.client.version()
            let pod = bed.pod(
                "counter-\(uniqueName("p"))",
                handler: CRITestBed.zeropodHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080]
            )
            let started = ContinuousClock.now
            let (podID, ip, appID, firstCount) = try await startCounterPod(bed, pod)
            var last = firstCount
            print(
                "[zpcri] \(flavor.name) (\(runtimeName) \(runtimeVersion)): pod \(pod.name) at \(ip) up after \(started.duration(to: .now))"
            )

            // One shim process serves the whole pod (sandbox and app), grouped by the CRI sandbox id.
            let shims = processes(matching: ["containerd-shim-zeropod-v2", bed.containerd.socket])
            #expect(shims.count == 1, "zeropod shims of this containerd: \(shims)")
            let socket = Self.statusSocket(bed, podID: podID)
            let initial = await Self.shimStatus(socket, appID)
            #expect(
                initial?.podName == pod.name && initial?.podNamespace == pod.namespace,
                "status: \(String(describing: initial))"
            )
            #expect(
                bed.processes(ofContainer: appID, in: pod).contains(initial?.pid ?? 0),
                "status pid not in the container's cgroup"
            )

            // The status board follows the driver a moment after the fact (the first connection may
            // be served before RUNNING is posted), so each cycle waits for a newer checkpoint and,
            // after the request, for the newer restore.
            var checkpointSeen: ProtobufTimestamp? = nil
            var restoreSeen: ProtobufTimestamp? = nil
            for cycle in 1...5 {
                var before: StatusAPI.ContainerStatus? = nil
                let down = await eventuallyAsync(within: 60, every: 0.1) {
                    before = await Self.shimStatus(socket, appID)
                    return before?.lifecyclePhase == .scaledDown && before?.lastCheckpoint?.finishedAt != checkpointSeen
                        && before?.lastRestore?.finishedAt == restoreSeen
                }
                try #require(down, "cycle \(cycle): never SCALED_DOWN; log: \(bed.containerd.log(tail: 30))")
                checkpointSeen = before?.lastCheckpoint?.finishedAt
                // Kubelet's probes from the node while scaled down (a process named kubelet, as
                // kubelet makes them): answered by the activator, no restore, though the listener
                // handover applies (decision 0052: sk_lookup leaves kubelet's connections to it).
                let probes = await onThreadResult { try KubeletProber.once(ip: ip, port: 8080) }
                let made = (try? probes.get()) ?? []
                #expect(
                    made.count == 2
                        && made.contains { $0.kind == "http" && (200..<400).contains(Int($0.result) ?? 0) }
                        && made.contains { $0.kind == "tcp" && $0.result == "ok" },
                    "cycle \(cycle): kubelet's HTTP and TCP probes: \(probes)"
                )
                let after = await Self.shimStatus(socket, appID)
                #expect(
                    after?.lifecyclePhase == .scaledDown,
                    "cycle \(cycle): a probe woke the app: \(String(describing: after))\n\(bed.containerd.log(tail: 40))"
                )
                #expect(after?.lastRestore?.finishedAt == restoreSeen, "cycle \(cycle): a restore happened")
                // A real request restores it, and the counter in its memory goes on.
                let next = try await appRequest(ip)
                #expect(
                    next == last + 1,
                    "cycle \(cycle): count \(String(describing: next)) after \(last): memory lost?"
                )
                last = next ?? last
                var restored: StatusAPI.ContainerStatus? = nil
                #expect(
                    await eventuallyAsync(within: 30, every: 0.05) {
                        restored = await Self.shimStatus(socket, appID)
                        return restored?.lastRestore?.finishedAt != restoreSeen
                    },
                    "cycle \(cycle): the request was served without a restore being recorded"
                )
                restoreSeen = restored?.lastRestore?.finishedAt
                print(
                    "[zpcri] \(flavor.name) cycle \(cycle): checkpoint \(before?.lastCheckpoint?.duration ?? .zero), restore \(restored?.lastRestore?.duration ?? .zero), count=\(last)"
                )
            }

            // ExecSync wakes a scaled-down container and runs in it.
            #expect(
                await eventuallyAsync(within: 60, every: 0.1) {
                    let status = await Self.shimStatus(socket, appID)
                    return status?.lifecyclePhase == .scaledDown && status?.lastCheckpoint?.finishedAt != checkpointSeen
                }
            )
            let exec = try await bed.client.execSync(appID, ["/bin/sh", "-c", "echo exec-$((6*7))"], timeout: 60)
            #expect(exec.exitCode == 0 && exec.stdoutText == "exec-42\n", "ExecSync: \(exec)")
            #expect(
                await eventuallyAsync(within: 30, every: 0.05) {
                    let status = await Self.shimStatus(socket, appID)
                    return status?.lifecyclePhase == .running && status?.lastRestore?.finishedAt != restoreSeen
                },
                "ExecSync did not restore"
            )
            #expect(try await appRequest(ip) == last + 1, "the exec's restore lost the memory")
            // ContainerStats carries CPU and memory (CRIShimFeatureTests compare them with runc's).
            let stats = try await bed.client.containerStats(appID)
            #expect(stats?.hasCPU == true && stats?.hasMemory == true, "ContainerStats: \(String(describing: stats))")
            // A streaming exec (no terminal) while running: output and exit code come back.
            let url = try await bed.client.exec(
                appID,
                ["/bin/sh", "-c", "echo streamed-$((6*7)); exit 4"],
                tty: false,
                stdin: false,
                stderr: true
            )
            let streamed = try await streamingExec(url: url)
            #expect(streamed.stdoutText == "streamed-42\n" && streamed.exitCode == 4, "\(streamed)")
            let listed = try await bed.client.listContainers(podID: podID)
            #expect(listed.map(\.id) == [appID] && listed.first?.state == .running, "ListContainers: \(listed)")
            #expect(try await bed.client.containerStatus(appID).state == .running)
            // Kubelet deletes the pod while the app is scaled down (StopContainer first).
            #expect(
                await eventuallyAsync(within: 60, every: 0.1) {
                    await Self.shimStatus(socket, appID)?.lifecyclePhase == .scaledDown
                }
            )

            try await assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID],
                shimName: "containerd-shim-zeropod-v2"
            )
        }
    }

    @Test(arguments: ContainerdFlavor.all)
    func twoContainerPod_withContainerNames_scalesOnlyTheNamedOne(flavor: ContainerdFlavor) async throws {
        try await withCRITestBed(flavor: flavor, tag: "cripair") { bed in
            let pod = bed.pod(
                "pair-\(uniqueName("p"))",
                handler: CRITestBed.zeropodHandler,
                annotations: [
                    "zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/container-names": "app",
                    "zeropod.ctrox.dev/ports-map": "app=8080",
                ],
                containerPorts: [8080, 8081]
            )
            let (podID, ip, appID, first) = try await startCounterPod(bed, pod)
            let sideID = try await bed.startContainer(
                pod.containerConfig(
                    "side",
                    image: bed.busyboxImage,
                    command: ["/bin/httpd", "-f", "-p", "8081", "-h", "/www"]
                ),
                in: podID,
                of: pod
            )
            func sideAnswer() async -> String? {
                try? await onThread { try KubeletProbe.http(ip: ip, port: 8081, userAgent: "zpcri-client/1").body }
            }
            #expect(await eventuallyAsync(within: 30) { await sideAnswer() == "zeropod busybox\n" })
            #expect(processes(matching: ["containerd-shim-zeropod-v2", bed.containerd.socket]).count == 1)
            let socket = Self.statusSocket(bed, podID: podID)
            var checkpointSeen: ProtobufTimestamp? = nil
            for cycle in 1...2 {
                // The named container scales down (twice, so the other one outlives two scale-down
                // durations) while the other one keeps its processes and answers.
                #expect(
                    await eventuallyAsync(within: 60, every: 0.1) {
                        let status = await Self.shimStatus(socket, appID)
                        guard status?.lifecyclePhase == .scaledDown,
                            status?.lastCheckpoint?.finishedAt != checkpointSeen
                        else { return false }
                        checkpointSeen = status?.lastCheckpoint?.finishedAt
                        return true
                    },
                    "cycle \(cycle): app never scaled down"
                )
                // Only the prepared restore's CRIU worker waits in the app's cgroup (decision 0003).
                let left = bed.processes(ofContainer: appID, in: pod).filter { commandName(of: $0) != "criu" }
                #expect(left.isEmpty, "cycle \(cycle): app processes left: \(left.map(commandName(of:)))")
                #expect(
                    !bed.processes(ofContainer: sideID, in: pod).isEmpty,
                    "cycle \(cycle): the unnamed container stopped"
                )
                #expect(
                    await sideAnswer() == "zeropod busybox\n",
                    "cycle \(cycle): the unnamed container does not answer"
                )
                let side = await Self.shimStatus(socket, sideID)
                #expect(side?.lifecyclePhase != .scaledDown, "cycle \(cycle): side: \(String(describing: side))")
                #expect(try await appRequest(ip) == first + cycle, "cycle \(cycle): app's memory")
            }
            try await assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID, sideID],
                shimName: "containerd-shim-zeropod-v2"
            )
        }
    }

    @Test(arguments: ContainerdFlavor.all)
    func runcPod_control_servesExecsStatsAndCleansUp(flavor: ContainerdFlavor) async throws {
        try await withCRITestBed(flavor: flavor, tag: "crirunc") { bed in
            let pod = bed.pod(
                "counter-\(uniqueName("r"))",
                handler: CRITestBed.runcHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s"],
                containerPorts: [8080]
            )
            let (podID, ip, appID, firstCount) = try await startCounterPod(bed, pod)
            var last = firstCount
            #expect(processes(matching: ["containerd-shim-runc-v2", bed.containerd.socket]).count == 1)
            // Probes reach the app itself (counted), and nothing scales down.
            var http: (status: Int, body: String)?
            _ = await eventuallyAsync(within: 10) {
                http = try? await onThread { try KubeletProbe.http(ip: ip, port: 8080) }
                return http != nil
            }
            #expect(http?.status == 200 && count(in: http?.body) == last + 1)
            last += 1
            #expect(try await appRequest(ip) == last + 1)
            let exec = try await bed.client.execSync(appID, ["/bin/sh", "-c", "echo exec-$((6*7))"], timeout: 60)
            #expect(exec.exitCode == 0 && exec.stdoutText == "exec-42\n")
            let status = try await bed.client.containerStatus(appID)
            #expect(status.state == .running && status.name == "app")
            // `kubectl exec -it`: a terminal, a resize, input on stdin, the exit code in the status.
            let url = try await bed.client.exec(appID, ["/bin/sh"], tty: true, stdin: true, stderr: false)
            let terminal = try await streamingExec(
                url: url,
                input: Array("stty size; tty; exit 3\n".utf8),
                resize: (columns: 100, rows: 30)
            )
            print(
                "[zpcri] \(flavor.name) terminal exec over \(terminal.subprotocol): \(terminal.stdoutText.debugDescription) status \(terminal.status)"
            )
            #expect(
                terminal.stdoutText.contains("30 100") && terminal.stdoutText.contains("/dev/pts/"),
                "\(terminal.stdoutText)"
            )
            #expect(terminal.exitCode == 3, "status: \(terminal.status)")
            let stats = try #require(try await bed.client.containerStats(appID))
            print("[zpcri] \(flavor.name) runc ContainerStats: \(stats)")
            #expect(stats.id == appID && (stats.cpuUsageCoreNanoSeconds ?? 0) > 0 && (stats.workingSetBytes ?? 0) > 0)
            try await assertRemovalLeavesNothing(
                bed,
                pod: pod,
                podID: podID,
                containerIDs: [appID],
                shimName: "containerd-shim-runc-v2"
            )
        }
    }

    /// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox (as kubelet deletes a
    /// pod), then: no shim, no process
    /// of the pod (found through the containers' cgroups before), no mount naming the pod or its
    /// containers, no pod netns file, no BPF link in the pod netns (held open meanwhile, so its
    /// inode stays meaningful), no checkpoint images, no pod cgroup.
    func assertRemovalLeavesNothing(
        _ bed: CRITestBed,
        pod: KubeletPod,
        podID: String,
        containerIDs: [String],
        shimName: String
    ) async throws {
        // The sandbox's (pause) processes first; a scaled-down app has none.
        let pids = ([podID] + containerIDs).flatMap { bed.processes(ofContainer: $0, in: pod) }
        #expect(!bed.processes(ofContainer: podID, in: pod).isEmpty, "no pause process in the sandbox's cgroup")
        let netnsInode = pids.first.flatMap(netnsInode(ofProcess:))
        let netnsHolder = pids.first.map { open("/proc/\($0)/ns/net", O_RDONLY | O_CLOEXEC) } ?? -1
        defer { if netnsHolder >= 0 { close(netnsHolder) } }
        let netnsFiles = ((try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []).filter {
            name in
            var st = stat()
            return stat("/var/run/netns/\(name)", &st) == 0 && UInt64(st.st_ino) == netnsInode
        }
        #expect(netnsFiles.count == 1, "the pod's netns file: \(netnsFiles)")
        try await bed.removePod(podID)
        #expect(
            await eventuallyAsync(within: 30) { processes(matching: [shimName, bed.containerd.socket]).isEmpty },
            "shim left: \(processes(matching: [shimName, bed.containerd.socket]))"
        )
        for pid in pids where pid > 0 {
            #expect(await eventuallyAsync(within: 30) { !isAlive(pid) }, "process \(pid) left")
        }
        let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for id in [podID] + containerIDs {
            #expect(!mountinfo.contains(id), "a mount of \(id) is left")
            #expect(!FileManager.default.fileExists(atPath: "/run/containerd/runc/k8s.io/\(id)"))
            #expect(
                !FileManager.default.fileExists(
                    atPath: NodeLayout().imageDirectory(containerdNamespace: CRITestBed.criNamespace, containerID: id)
                ),
                "checkpoint images of \(id) left"
            )
        }
        for file in netnsFiles {
            #expect(!FileManager.default.fileExists(atPath: "/var/run/netns/\(file)"), "netns \(file) left")
        }
        if let netnsInode {
            let links = (try? run(["bpftool", "-j", "link", "show"]).stdout) ?? ""
            #expect(!links.contains("\"netns_ino\":\(netnsInode)"), "a BPF link of the pod netns is left: \(links)")
        }
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/bpf/zeropod/\(podID)"))
        // The bed removed the pod cgroup as kubelet does: rmdir fails while a container's cgroup is left.
        #expect(bed.cgroups(of: pod).isEmpty, "pod cgroups left: \(bed.cgroups(of: pod))")
    }
}

/// The gRPC probe helper against a real gRPC server (grpcio's, on loopback): it reaches the
/// server through C-core's connection setup, sends kubelet's user agent, and reads the status.
/// (The probe against a scaled-down pod is issue 18's gap, tested with its fix.)
@Suite(.enabled(if: KubeletProbe.grpcProbeAvailable, "needs grpcio in $ZP_CACHE/grpcio (make setup)"))
struct KubeletGRPCProbeTests {
    @Test func grpcProbe_sendsKubeletsUserAgent_andReadsTheHealthStatus() async throws {
        let port = UInt16.random(in: 20000...29999)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: KubeletProbe.grpcioPython)
        server.arguments = [TestPaths.packageRoot + "/scripts/cri/grpc-probe.py", "serve", "\(port)"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { killAndReap(server.processIdentifier) }
        var answer = ""
        #expect(
            await eventuallyAsync(within: 30) {
                answer = (try? await onThread { try KubeletProbe.grpc(ip: "127.0.0.1", port: port, timeout: 2) }) ?? ""
                return answer == "SERVING"
            },
            "kube-probe user agent: \(answer)"
        )
        let other = try await onThread {
            try KubeletProbe.grpc(ip: "127.0.0.1", port: port, userAgent: "grpc-client/1")
        }
        #expect(other == "NOT_SERVING", "another user agent: \(other)")
        killAndReap(server.processIdentifier)
        let down = try await onThread { try KubeletProbe.grpc(ip: "127.0.0.1", port: port, timeout: 2) }
        #expect(down.hasPrefix("ERROR "), "no server: \(down)")
    }
}
