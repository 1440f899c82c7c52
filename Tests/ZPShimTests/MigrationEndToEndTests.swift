import Foundation
import KubeAPIDouble
import Testing
import ZPCore
import ZPKube
import ZPSystem
import ZPTestSupport

// Offline migration end to end (issue 16, decision 0057): two nodes on one machine. Each node is
// a private containerd (node-a 1.6, node-b 2.x) whose shims read their own node.conf (run-dir and
// state-dir of that node), and a real `zeropod-manager -migration` process on the same folders
// with its own pod IP on loopback (127.0.0.2, 127.0.0.3: the leaf certificates name them, the
// managers talk mutual TLS). The Kubernetes API server is the double (no API server exists here),
// with config/'s Migration CRD installed; the pods are created in it as kubelet's API objects
// would be, and the containers through containerd's API (`ctr`) with the CRI annotations kubelet's
// CRI plugin sets. Simplification: the managers share the host network namespace (not one netns
// per node on a bridge).

/// A node of the test: its folders, its containerd and its manager process.
private struct TestNode {
    let name: String
    let podIP: String
    let folder: String
    let layout: NodeLayout
    let nodeConfig: String

    init(name: String, podIP: String, scratch: String) throws {
        self.name = name
        self.podIP = podIP
        folder = scratch + "/" + name
        layout = NodeLayout(runDirectory: folder + "/run", stateDirectory: folder + "/state")
        nodeConfig = folder + "/node.conf"
        try FileManager.default.createDirectory(atPath: layout.runDirectory, withIntermediateDirectories: true)
        try "run-dir = \(layout.runDirectory)\nstate-dir = \(layout.stateDirectory)\n".write(
            toFile: nodeConfig,
            atomically: true,
            encoding: .utf8
        )
    }

    /// Starts `zeropod-manager -migration` for this node, logging to `<folder>/manager.log`.
    func startManager(kubeconfig: String) throws -> Process {
        let manager = Process()
        manager.executableURL = URL(fileURLWithPath: TestPaths.buildDirectory + "/zeropod-manager")
        manager.arguments = [
            "-migration", "-metrics-addr=127.0.0.1:\(freeLoopbackPort())",
            "-node-server-addr=\(podIP):\(freeLoopbackPort())", "-kubeconfig=\(kubeconfig)",
            "-node-config=\(nodeConfig)", "-migration-claim-timeout=20s", "-migration-servers-timeout=60s",
        ]
        manager.environment = ["NODE_NAME": name, "POD_IP": podIP, "PATH": "/usr/bin:/bin"]
        _ = FileManager.default.createFile(atPath: folder + "/manager.log", contents: nil)
        manager.standardOutput = FileHandle(forWritingAtPath: folder + "/manager.log")
        manager.standardError = FileHandle(forWritingAtPath: folder + "/manager.log")
        try manager.run()
        return manager
    }

    func managerLog(tail: Int = 25) -> String {
        ((try? String(contentsOfFile: folder + "/manager.log", encoding: .utf8)) ?? "").split(separator: "\n")
            .suffix(tail).joined(separator: "\n")
    }
}

/// The pod objects of the test: a Deployment's pod (label pod-template-hash) whose container
/// `app` migrates.
private func pod(_ name: String, node: String, containerID: String, running: Bool) -> JSON {
    [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": [
            "name": .string(name), "namespace": "default", "labels": ["pod-template-hash": "5d9c"],
            "annotations": ["zeropod.ctrox.dev/migrate": "app"],
        ],
        "spec": ["nodeName": .string(node), "containers": [["name": "app", "image": "busybox"]]],
        "status": running
            ? [
                "phase": "Running",
                "containerStatuses": [["name": "app", "containerID": .string("containerd://\(containerID)")]],
            ] : ["phase": "Pending"],
    ]
}

/// The CRI annotations kubelet's CRI plugin puts on a container of pod `name`.
private func criAnnotations(pod name: String) -> [String] {
    [
        "--annotation", "zeropod.ctrox.dev/migrate=app", "--annotation", "io.kubernetes.cri.container-name=app",
        "--annotation", "io.kubernetes.cri.sandbox-name=\(name)", "--annotation",
        "io.kubernetes.cri.sandbox-namespace=default",
    ]
}

@Suite(.serialized) struct MigrationEndToEndTests {
    /// Two nodes' folders in a scratch folder and the API double (stopped at the end) for `body`.
    private func withTwoNodes(_ body: (KubeAPIDouble, TestNode, TestNode, String) async throws -> Void)
        async throws
    {
        let scratch = "/tmp/zpmig-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let a = try TestNode(name: "node-a", podIP: "127.0.0.2", scratch: scratch)
        let b = try TestNode(name: "node-b", podIP: "127.0.0.3", scratch: scratch)
        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["token": "system:serviceaccount:zeropod-system:zeropod-node"]
        settings.gracefulPodDeletion = true
        let double = try await KubeAPIDouble.start(settings: settings)
        do {
            try await body(double, a, b, scratch)
        } catch {
            await double.stop()
            throw error
        }
        await double.stop()
    }

    /// A scaled-down counter moves from node-a to node-b (containerd 1.6 to 2.x, and back) when its
    /// pod is deleted and its replacement lands on node-b: the first request on node-b shows the
    /// counter continued (memory moved), the Migration ends Completed, and neither node keeps an
    /// image.
    @Test(arguments: [[ContainerdFlavor.debian, .containerd2], [.containerd2, .debian]])
    func offlineMigration_scaledDownCounter_continuesOnTheOtherNode(flavors: [ContainerdFlavor]) async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        try await withTwoNodes { double, a, b, scratch in
            try await scenario(double: double, a: a, b: b, flavors: flavors, scratch: scratch, rootfs: rootfs)
        }
    }

    /// The image arrives but cannot be restored on the target (the old container bound a host
    /// folder at /data that the replacement's spec does not mount): the replacement starts from
    /// scratch (the counter starts over), never half restored; the Migration ends Failed with the
    /// reason, and no image is left on either node.
    @Test func offlineMigration_unrestorableImage_startsFromScratch_andFails() async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        try await withTwoNodes { double, a, b, scratch in
            try FileManager.default.createDirectory(atPath: scratch + "/data", withIntermediateDirectories: true)
            try await scenario(
                double: double,
                a: a,
                b: b,
                flavors: [.containerd2, .containerd2],
                scratch: scratch,
                rootfs: rootfs,
                sourceExtra: ["--mount", "type=bind,src=\(scratch)/data,dst=/data,options=rbind:rw"]
            )
        }
    }

    private func scenario(
        double: KubeAPIDouble,
        a: TestNode,
        b: TestNode,
        flavors: [ContainerdFlavor],
        scratch: String,
        rootfs: String,
        sourceExtra: [String] = []
    ) async throws {
        // A source with mounts the target lacks cannot be restored there.
        let restorable = sourceExtra.isEmpty
        try double.installCustomResourceDefinition(
            KubeAPIDouble.customResourceDefinition(
                yamlFile: TestPaths.packageRoot + "/config/components/migration/crd.yaml"
            )
        )
        try double.create("namespaces", ["metadata": ["name": "zeropod-system"]])
        let kubeconfig = scratch + "/kubeconfig"
        try double.kubeconfig(token: "token").write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        let sourceID = String(repeating: "a1", count: 32)
        let targetID = String(repeating: "b2", count: 32)
        let sourcePod = "web-5d9c-aaaaa"
        let targetPod = "web-5d9c-bbbbb"
        try double.create("pods", namespace: "default", pod(sourcePod, node: a.name, containerID: sourceID, running: true))

        let containerdA = try PrivateContainerd(
            flavor: flavors[0],
            tag: "miga",
            environment: ["ZEROPOD_NODE_CONFIG": a.nodeConfig]
        )
        defer { containerdA.stop() }
        let containerdB = try PrivateContainerd(
            flavor: flavors[1],
            tag: "migb",
            environment: ["ZEROPOD_NODE_CONFIG": b.nodeConfig]
        )
        defer { containerdB.stop() }
        let netnsA = try TestNetns("zpmig-a")
        defer { netnsA.delete() }
        let netnsB = try TestNetns("zpmig-b")
        defer { netnsB.delete() }
        let managerA = try a.startManager(kubeconfig: kubeconfig)
        defer {
            kill(managerA.processIdentifier, SIGTERM)
            managerA.waitUntilExit()
        }
        let managerB = try b.startManager(kubeconfig: kubeconfig)
        defer {
            kill(managerB.processIdentifier, SIGTERM)
            managerB.waitUntilExit()
        }
        #expect(
            eventually(within: 60) {
                FileManager.default.fileExists(atPath: a.layout.nodeSocket)
                    && FileManager.default.fileExists(atPath: b.layout.nodeSocket)
            },
            "node sockets missing; a:\n\(a.managerLog())\nb:\n\(b.managerLog())"
        )

        // The app on node-a: counter at 2, then scaled down (its checkpoint holds the counter).
        try startCounter(containerdA, netns: netnsA, id: sourceID, rootfs: rootfs, extra: criAnnotations(pod: sourcePod) + sourceExtra)
        defer { removeTask(containerdA, sourceID) }
        #expect(netnsA.httpGet(port: 8080)?.contains("count=2") == true)
        try #require(waitScaledDown(containerdA, netns: netnsA, checkpoints: 1), "\(containerdA.log(tail: 30))")

        // Drain: the pod is deleted, node-a's manager makes the Migration; the replacement pod is
        // scheduled on node-b, whose manager claims it.
        let deleted = ContinuousClock.now
        #expect(double.call("DELETE", "/api/v1/namespaces/default/pods/\(sourcePod)").status == 200)
        try double.create("pods", namespace: "default", pod(targetPod, node: b.name, containerID: targetID, running: false))
        func migration() -> JSON? { double.object("migrations", namespace: "default", name: sourcePod) }
        try #require(
            eventually(within: 60) { migration()?[path: ["spec", "targetPod"]]?.stringValue == targetPod },
            "not claimed: \(String(describing: migration()))\na:\n\(a.managerLog())\nb:\n\(b.managerLog())"
        )

        // kubelet on node-b creates the replacement container while kubelet on node-a stops the
        // old one: the target's Create waits for the image the source's Kill hands over.
        let create = Process()
        create.executableURL = URL(fileURLWithPath: containerdB.flavor.binDirectory + "/ctr")
        create.arguments =
            [
                "-a", containerdB.socket, "-n", containerdB.namespace, "run", "-d", "--runtime",
                "io.containerd.zeropod.v2", "--annotation", "zeropod.ctrox.dev/scaledown-duration=2s", "--with-ns",
                "network:\(netnsB.path)", "--log-uri", "file://\(containerdB.directory)/\(targetID).out",
            ] + criAnnotations(pod: targetPod) + ["--rootfs", rootfs, targetID, "/bin/sh", "-c", counterServer]
        let createOutput = scratch + "/ctr-run.out"
        _ = FileManager.default.createFile(atPath: createOutput, contents: nil)
        create.standardOutput = FileHandle(forWritingAtPath: createOutput)
        create.standardError = FileHandle(forWritingAtPath: createOutput)
        try create.run()
        defer { removeTask(containerdB, targetID) }
        let killed = try containerdA.ctr(["task", "kill", sourceID], timeout: 300)
        #expect(killed.status == 0, "ctr task kill: \(killed.stderr)")
        #expect(eventually(within: 300) { !create.isRunning }, "ctr run on node-b did not return")
        try #require(
            !create.isRunning && create.terminationStatus == 0,
            "ctr run on node-b: \((try? String(contentsOfFile: createOutput, encoding: .utf8)) ?? "")\n\(containerdB.log(tail: 40))\na:\n\(containerdA.log(tail: 20))"
        )

        // The first request on node-b: the counter continued from node-a's memory.
        var body: String?
        _ = eventually(within: 30) {
            body = netnsB.httpGet(port: 8080)
            return body != nil
        }
        let firstResponse = ContinuousClock.now
        #expect(
            body?.contains(restorable ? "count=3" : "count=1") == true,
            "first response on node-b: \(body ?? "none")\n\(containerdB.log(tail: 40))"
        )
        #expect(containerdB.logLines(containing: "migration: restored the migrated image at Start").isEmpty != restorable)
        #expect(
            containerdB.logLines(
                containing: "migration: the migrated image cannot be restored, starting from scratch"
            ).isEmpty == restorable
        )
        #expect(containerdA.logLines(containing: "migration: checkpoint handed to the claimed target").count == 1)
        func phase() -> String? {
            migration()?[path: ["status", "containers"]]?.arrayValue?.first?[path: ["condition", "phase"]]?.stringValue
        }
        #expect(
            eventually(within: 60) { phase() == (restorable ? "Completed" : "Failed") },
            "phase \(phase() ?? "-")\na:\n\(a.managerLog())\nb:\n\(b.managerLog())"
        )
        // No image is left: the source's checkpoint and archive, the target's pulled image.
        let sourceImages = a.layout.imageDirectory(containerdNamespace: containerdA.namespace, containerID: sourceID)
        let targetImages = b.layout.imageDirectory(containerdNamespace: containerdB.namespace, containerID: targetID)
        #expect(
            eventually(within: 60) {
                !FileManager.default.fileExists(atPath: a.layout.migrationDirectory(containerID: sourceID))
                    && !FileManager.default.fileExists(atPath: b.layout.migrationDirectory(containerID: targetID))
                    && !FileManager.default.fileExists(atPath: sourceImages)
                    && !FileManager.default.fileExists(atPath: targetImages)
            },
            "left: \((try? run(["find", a.folder + "/state", b.folder + "/state"]))?.stdout ?? "")"
        )
        // And it scales down on node-b like any container.
        #expect(waitScaledDown(containerdB, netns: netnsB, checkpoints: 1))
        #expect(netnsB.httpGet(port: 8080)?.contains(restorable ? "count=4" : "count=2") == true)
        if !restorable {
            let message = migration()?[path: ["status", "containers"]]?.arrayValue?.first?[path: [
                "condition", "message",
            ]]?.stringValue
            #expect(message?.contains("/data") == true, "\(message ?? "no message")")
            print("[zpmigration] unrestorable image: started from scratch; Migration Failed: \(message ?? "-")")
            return
        }
        print(
            "[zpmigration] \(flavors[0].name) -> \(flavors[1].name) offline: delete -> first response on the target "
                + "\(milliseconds(firstResponse - deleted)) ms; "
                + (containerdB.logLines(containing: "restored the migrated image").first.map { String($0.suffix(160)) } ?? "")
        )
    }
}
