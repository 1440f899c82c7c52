import Foundation
import Glibc
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPTestSupport

/// busybox httpd on 8080 (kubelet probes it; `/` answers 200 "zeropod busybox") and an echo server
/// on 9000 (`nc -ll -e cat`: long-lived connections for `proxy-timeout`).
let httpAndEchoApp = "httpd -p 8080 -h /www; exec nc -ll -p 9000 -e /bin/cat"

/// Issue 18, items 2, 6 and the gRPC finding, through CRI only (decision 0040): kubelet's probes,
/// made by a process named kubelet in a cgroup of its own (kubeadm) and by one named k3s (kubelet
/// inside another binary) over IPv4-mapped IPv6 sockets, never keep a `scaledown-duration=2s`
/// container up and are answered while it is down without a restore (HTTP, TCP and gRPC with
/// grpcio); a non-probe request from the node's address every second, from another process and
/// cgroup, keeps it up; the connection that wakes it is handed over to the app (the listener
/// handover applies by default since kubelet's connections are recognised in sk_lookup too,
/// decision 0052), so no proxy carries it and `proxy-timeout` does not cut it.
@Suite(
    .serialized,
    .enabled(if: criTestBedAvailable, "needs root, runc, CRIU, gcc and the CNI plugins (make setup)"),
    .enabled(if: KubeletProbe.grpcProbeAvailable, "needs grpcio in $ZP_CACHE/grpcio (make setup)")
)
struct KubeletIdentificationTests {
    /// Waits for a checkpoint newer than `seen` (SCALED_DOWN); returns the status, nil if none in 60 s.
    static func newCheckpoint(
        _ socket: String,
        _ id: String,
        after seen: ProtobufTimestamp?
    ) async -> StatusAPI.ContainerStatus? {
        var status: StatusAPI.ContainerStatus?
        let down = await eventuallyAsync(within: 60, every: 0.1) {
            status = await CRIPodTests.shimStatus(socket, id)
            return status?.lifecyclePhase == .scaledDown && status?.lastCheckpoint?.finishedAt != seen
        }
        return down ? status : nil
    }

    /// Wall-clock seconds of a status timestamp.
    static func seconds(_ t: ProtobufTimestamp?) -> Double {
        guard let t else { return 0 }
        return Double(t.seconds) + Double(t.nanos) / 1e9
    }

    /// The prober's rounds after `time` once it made at least `rounds` of each kind (60 s).
    static func rounds(_ prober: KubeletProber, after time: Double, count rounds: Int) async -> [KubeletProber.Probe] {
        _ = await eventuallyAsync(within: 60, every: 0.2) {
            let kinds = Dictionary(grouping: prober.probes(after: time), by: \.kind)
            return !kinds.isEmpty && kinds.values.allSatisfy { $0.count >= rounds }
        }
        return prober.probes(after: time)
    }

    /// One row of the matrix: a prober running from the start, the container scales down anyway,
    /// and the probes made while it is down are answered without a restore.
    func probesDoNotKeepItUp_andAreAnsweredWhileDown(
        _ prober: KubeletProber,
        label: String,
        flavor: ContainerdFlavor,
        socket: String,
        appID: String,
        checkpointSeen: ProtobufTimestamp?,
        restoreSeen: ProtobufTimestamp?,
        log: () -> String
    ) async throws -> StatusAPI.ContainerStatus {
        let started = Date().timeIntervalSince1970
        let down = await Self.newCheckpoint(socket, appID, after: checkpointSeen)
        let status = try #require(down, "\(label): probes kept the container up; \(prober.probes())\n\(log())")
        let downAt = Self.seconds(status.lastCheckpoint?.finishedAt)
        let checkpointBegan =
            downAt - Double(status.lastCheckpoint?.duration.components.seconds ?? 0)
            - Double(status.lastCheckpoint?.duration.components.attoseconds ?? 0) / 1e18
        // Had these probes counted, no checkpoint could begin within 2 s (the scale-down duration)
        // of one: the prober probing through that window is the proof.
        let beforeDown = prober.probes().filter { $0.time < checkpointBegan - 0.05 }
        let inTheLastTwoSeconds = beforeDown.filter { $0.time > checkpointBegan - 1.95 && $0.kind != "grpc" }
        #expect(
            !inTheLastTwoSeconds.isEmpty,
            "\(label): no probe in the 2 s before the checkpoint began at \(checkpointBegan): \(beforeDown)"
        )
        let whileDown = await Self.rounds(prober, after: downAt + 0.5, count: 3)
        let after = await CRIPodTests.shimStatus(socket, appID)
        #expect(after?.lifecyclePhase == .scaledDown, "\(label): a probe woke the app: \(String(describing: after))")
        #expect(after?.lastRestore?.finishedAt == restoreSeen, "\(label): a restore happened while probing")
        let byKind = Dictionary(grouping: whileDown, by: \.kind)
        #expect(
            byKind["http"]?.allSatisfy { $0.result == "204" } == true,
            "\(label) HTTP while down: \(byKind["http"] ?? [])"
        )
        #expect(
            byKind["tcp"]?.allSatisfy { $0.result == "ok" } == true,
            "\(label) TCP while down: \(byKind["tcp"] ?? [])"
        )
        #expect(
            byKind["grpc"]?.allSatisfy { $0.result == "SERVING" } == true,
            "\(label) gRPC while down: \(byKind["grpc"] ?? [])"
        )
        print(
            "[zpcri-matrix] \(flavor.name) \(label): scaled down \(String(format: "%.1f", downAt - started)) s after"
                + " the prober started, \(beforeDown.count) probes before it, \(inTheLastTwoSeconds.count) of them"
                + " within the 2 s before the checkpoint began (kept it up: no); while down: "
                + ["http", "tcp", "grpc"].map { kind in
                    "\(kind) \((byKind[kind] ?? []).map(\.result).joined(separator: ","))"
                }.joined(separator: "; ")
                + "; restores while down: \(after?.lastRestore?.finishedAt == restoreSeen ? 0 : 1)"
        )
        return status
    }

    @Test(arguments: ContainerdFlavor.all)
    func kubeletProbes_neverKeepUpNorWake_otherNodeTrafficDoes(flavor: ContainerdFlavor) async throws {
        try await withCRITestBed(flavor: flavor, tag: "crikub") { bed in
            let pod = bed.pod(
                "probed-\(uniqueName("k"))",
                handler: CRITestBed.zeropodHandler,
                annotations: [
                    "zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080,9000",
                    "zeropod.ctrox.dev/proxy-timeout": "1s",
                ],
                containerPorts: [8080, 9000]
            )
            let (podID, ip) = try await bed.runPodSandbox(pod)
            let appID = try await bed.startContainer(
                pod.containerConfig("app", image: bed.busyboxImage, command: ["/bin/sh", "-c", httpAndEchoApp]),
                in: podID,
                of: pod
            )
            func appAnswer() async -> String? {
                try? await onThread {
                    try KubeletProbe.http(ip: ip, port: 8080, userAgent: "zpcri-client/1", timeout: 20).body
                }
            }
            try #require(
                await eventuallyAsync(within: 60) { await appAnswer() == "zeropod busybox\n" },
                "the app never answered; \(bed.containerd.log(tail: 30))"
            )
            let socket = CRIPodTests.statusSocket(bed, podID: podID)
            let log = { bed.containerd.log(tail: 40) }
            let group = "zpcri-kubelet-\(uniqueName("g"))"
            let kubeletCgroup = try TestCgroup("\(group)/kubelet.service")
            let k3sCgroup = try TestCgroup("\(group)/k3s.service")
            let ingressCgroup = try TestCgroup("\(group)/ingress.scope")
            defer {
                ingressCgroup.remove()
                k3sCgroup.remove()
                kubeletCgroup.remove()
            }

            // 1. kubeadm-style: a process named kubelet in its own cgroup, HTTP + TCP + gRPC every second.
            var status: StatusAPI.ContainerStatus
            do {
                let kubelet = try KubeletProber(as: "kubelet", ip: ip, port: 8080, grpc: true, cgroup: kubeletCgroup)
                defer { kubelet.stop() }
                #expect(kubelet.kernelName == "kubelet" && kubeletCgroup.processes == [kubelet.pid])
                status = try await probesDoNotKeepItUp_andAreAnsweredWhileDown(
                    kubelet,
                    label: "kubelet (own cgroup, IPv4)",
                    flavor: flavor,
                    socket: socket,
                    appID: appID,
                    checkpointSeen: nil,
                    restoreSeen: nil,
                    log: log
                )
            }

            // 2. k3s-style: kubelet inside a process named k3s, IPv4-mapped IPv6 sockets (EKS #86).
            #expect(await appAnswer() == "zeropod busybox\n", "a real request wakes it")
            var restored: StatusAPI.ContainerStatus?
            #expect(
                await eventuallyAsync(within: 30, every: 0.05) {
                    restored = await CRIPodTests.shimStatus(socket, appID)
                    return restored?.lastRestore?.finishedAt != nil
                }
            )
            do {
                let k3s = try KubeletProber(
                    as: "k3s",
                    ip: ip,
                    port: 8080,
                    grpc: true,
                    family: .mapped,
                    cgroup: k3sCgroup
                )
                defer { k3s.stop() }
                #expect(k3s.kernelName == "k3s")
                status = try await probesDoNotKeepItUp_andAreAnsweredWhileDown(
                    k3s,
                    label: "k3s (kubelet inside k3s, IPv4-mapped)",
                    flavor: flavor,
                    socket: socket,
                    appID: appID,
                    checkpointSeen: status.lastCheckpoint?.finishedAt,
                    restoreSeen: restored?.lastRestore?.finishedAt,
                    log: log
                )
            }

            // 3. A non-probe request from the node's address every second, from another process in
            // another cgroup (a host-network ingress proxy), keeps it up while kubelet keeps probing.
            do {
                let kubelet = try KubeletProber(as: "kubelet", ip: ip, port: 8080, grpc: true, cgroup: kubeletCgroup)
                defer { kubelet.stop() }
                let ingress = try KubeletProber(
                    as: "nginx",
                    ip: ip,
                    port: 8080,
                    tcp: false,
                    userAgent: "ingress-nginx/1.11",
                    cgroup: ingressCgroup
                )
                defer { ingress.stop() }
                let wokenAt = Date().timeIntervalSince1970
                let restoreBefore = status.lastRestore?.finishedAt
                var up: StatusAPI.ContainerStatus?
                #expect(
                    await eventuallyAsync(within: 60, every: 0.05) {
                        up = await CRIPodTests.shimStatus(socket, appID)
                        return up?.lifecyclePhase == .running && up?.lastRestore?.finishedAt != restoreBefore
                    },
                    "the ingress requests did not wake it; \(ingress.probes())"
                )
                // Eight scale-down durations: it stays up, with no new checkpoint.
                let checkpointBefore = up?.lastCheckpoint?.finishedAt
                let stayedUp = await eventuallyAsync(within: 16, every: 0.25) {
                    let now = await CRIPodTests.shimStatus(socket, appID)
                    return now?.lifecyclePhase != .running || now?.lastCheckpoint?.finishedAt != checkpointBefore
                }
                #expect(!stayedUp, "a request every second from the node's address did not keep it up")
                let served = ingress.probes(after: wokenAt)
                #expect(served.count >= 10 && served.allSatisfy { $0.result == "200" }, "ingress: \(served)")
                print(
                    "[zpcri-matrix] \(flavor.name) non-probe GET every 1 s from the node address (process nginx,"
                        + " cgroup \(group)/ingress.scope) with kubelet probing: kept it up 16 s"
                        + " (\(served.count) requests, \(kubelet.probes(after: wokenAt).count) kubelet probes)"
                )
                ingress.stop()
                // Without it, kubelet's probes alone let it scale down again.
                let again = await Self.newCheckpoint(socket, appID, after: checkpointBefore)
                #expect(again != nil, "kubelet's probes kept it up after the ingress stopped; \(log())")
                status = again ?? status
            }

            // 4. The first connection after a scale-down takes the listener handover (on by default:
            // kubelet's probes are recognised by their connection, decision 0052), so no proxy of
            // ours carries it and `proxy-timeout` (1 s, for proxied connections only) cannot cut it:
            // traffic every 300 ms for 2.7 s, then 2.5 s idle, and it still echoes.
            let echo = try await onThread { try TestSocket.connect(fromNetns: nil, to: ip, port: 9000, timeout: 30) }
            let sent = ContinuousClock.now
            for i in 0..<10 {
                let line = "ping-\(i)\n"
                let answer = try await onThread {
                    try echo.send(line)
                    return try echo.receive(line.utf8.count)
                }
                #expect(answer == line)
                if i < 9 { try await Task.sleep(for: .milliseconds(300)) }
            }
            let talked = sent.duration(to: .now)
            try await Task.sleep(for: .milliseconds(2500))  // the idle time under test, not a wait for a condition
            let late = try await onThread {
                echo.setTimeouts(seconds: 20)
                try echo.send("late\n")
                return try echo.receive(5)
            }
            #expect(late == "late\n", "the handed-over connection was cut after 2.5 s idle")
            print(
                "[zpcri-matrix] \(flavor.name) handover: the waking connection carried traffic for \(talked), then echoed after 2.5 s idle (proxy-timeout 1s does not apply: no proxy)"
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

    /// The control: with `learn-probe-sources = false` in the node settings (the shim reads the
    /// file named by ZEROPOD_NODE_CONFIG), the same kubelet probes are activity and keep the
    /// container up: the identification, not something else about the probes, let it scale down.
    @Test(arguments: ContainerdFlavor.all)
    func learnProbeSourcesOff_kubeletProbesKeepItUp(flavor: ContainerdFlavor) async throws {
        let folder = try TemporaryDirectory("zpcri-nodeconf")
        defer { folder.remove() }
        let nodeConfig = try folder.write("node.conf", "learn-probe-sources = false\n")
        try await withCRITestBed(flavor: flavor, tag: "crikof", environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]) {
            bed in
            let pod = bed.pod(
                "probed-\(uniqueName("o"))",
                handler: CRITestBed.zeropodHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080]
            )
            let (podID, ip) = try await bed.runPodSandbox(pod)
            let appID = try await bed.startContainer(
                pod.containerConfig(
                    "app",
                    image: bed.busyboxImage,
                    command: ["/bin/sh", "-c", "exec httpd -f -p 8080 -h /www"]
                ),
                in: podID,
                of: pod
            )
            try #require(
                await eventuallyAsync(within: 60) {
                    await
                        (try? onThread {
                            try KubeletProbe.http(ip: ip, port: 8080, userAgent: "zpcri-client/1", timeout: 20).body
                        })
                        == "zeropod busybox\n"
                },
                "the app never answered; \(bed.containerd.log(tail: 30))"
            )
            let socket = CRIPodTests.statusSocket(bed, podID: podID)
            let group = "zpcri-kubelet-\(uniqueName("g"))"
            let kubeletCgroup = try TestCgroup("\(group)/kubelet.service")
            defer { kubeletCgroup.remove() }
            let kubelet = try KubeletProber(as: "kubelet", ip: ip, port: 8080, cgroup: kubeletCgroup)
            defer { kubelet.stop() }
            let started = Date().timeIntervalSince1970
            // Eight scale-down durations with kubelet probing every second: no checkpoint.
            let scaledDown = await eventuallyAsync(within: 16, every: 0.25) {
                let now = await CRIPodTests.shimStatus(socket, appID)
                return now?.lifecyclePhase != .running || now?.lastCheckpoint != nil
            }
            let probes = kubelet.probes(after: started)
            #expect(!scaledDown, "learn-probe-sources = false, yet kubelet's probes let it scale down: \(probes)")
            #expect(probes.count >= 20 && probes.allSatisfy { $0.result == "200" || $0.result == "ok" }, "\(probes)")
            print(
                "[zpcri-matrix] \(flavor.name) learn-probe-sources = false: kubelet (own cgroup, IPv4) probing"
                    + " HTTP+TCP every 1 s kept it up 16 s (\(probes.count) probes, scaled down: \(scaledDown ? "yes" : "no"))"
            )
            kubelet.stop()
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
