// The installer IMAGE run as the zeropod-node DaemonSet's init container would run it (issue 13,
// item 4): a privileged CRI pod with the runc handler on one containerd ("the kubelet's") with
// hostPath mounts of a SECOND containerd's config folder, socket and throwaway opt and node
// settings folders. That second containerd is then restarted on what the installer wrote and runs a
// pod with RuntimeClass handler `zeropod` that scales down and comes back; `--uninstall` through
// the image gives the config back byte for byte and leaves nothing.
import Foundation
import Glibc
import NIOPosix
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPShim
import ZPTestSupport

/// Root, runc, the project's CRIU, the CNI plugins, gcc (the pause image), umoci and jq (the images).
let imageTestsAvailable =
    Privileges.isRoot && Privileges.hasTool("/usr/sbin/runc") && Privileges.hasTool("/usr/local/sbin/criu")
    && Privileges.hasTool("/usr/lib/cni/bridge") && Privileges.hasTool("/usr/lib/cni/host-local")
    && Privileges.hasTool("gcc") && Privileges.hasTool("umoci") && Privileges.hasTool("jq")

/// The archive of image `name` from `scripts/images.sh` (a release build the first time, cached by
/// content after that).
func imageArchive(_ name: String) async throws -> (ref: String, archive: String) {
    let started = ContinuousClock.now
    let result = try await runOffThePool([TestPaths.packageRoot + "/scripts/images.sh", name], timeout: 5400)
    guard result.status == 0 else {
        throw LabError("scripts/images.sh \(name) failed (\(result.status)): \(result.stderr.suffix(4000))")
    }
    for line in result.stdout.split(separator: "\n") {
        let fields = line.split(separator: " ").map(String.init)
        if fields.count == 3, fields[0] == name {
            let size = (try? FileManager.default.attributesOfItem(atPath: fields[2])[.size] as? Int) ?? 0
            print(
                "[zpimage] \(name): \(fields[1]) \(fields[2]) (\(size / 1_048_576) MiB), ready after \(started.duration(to: .now))"
            )
            print(result.stderr.split(separator: "\n").filter { $0.hasPrefix("[images]") }.joined(separator: "\n"))
            return (fields[1], fields[2])
        }
    }
    throw LabError("scripts/images.sh printed no \(name) image: \(result.stdout)")
}

/// What kubelet's container log holds (CRI format: `<time> <stream> <tag> <text>` per line): the text.
func containerLog(_ pod: KubeletPod, _ config: CRI.ContainerConfig) -> String {
    let text = (try? String(contentsOfFile: pod.logDirectory + "/" + config.logPath, encoding: .utf8)) ?? ""
    return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
        line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).dropFirst(3).first.map(String.init)
            ?? ""
    }.joined(separator: "\n")
}

/// Runs a one-container pod to completion, as kubelet runs an init container: RunPodSandbox,
/// CreateContainer, StartContainer, then ContainerStatus until it exited (10 min).
/// - Returns: the exit code and the container's output; the pod is removed.
func runToCompletion(
    _ bed: CRITestBed,
    _ pod: KubeletPod,
    _ config: CRI.ContainerConfig
) async throws -> (Int32, String) {
    let (podID, _) = try await bed.runPodSandbox(pod)
    let id = try await bed.startContainer(config, in: podID, of: pod)
    var status: CRI.ContainerStatus?
    let done = await eventuallyAsync(within: 600, every: 0.2) {
        status = try? await bed.client.containerStatus(id)
        return status?.state == .exited
    }
    let output = containerLog(pod, config)
    try #require(done, "\(config.name) did not exit: \(String(describing: status))\n\(output)")
    try await bed.removePod(podID)
    return (status?.exitCode ?? -1, output)
}

/// The status of container `id` of pod `podID` on `bed`, from the status socket of the shim that
/// serves the pod (keyed by containerd's address, the CRI namespace and the sandbox id), or nil.
func shimStatus(_ bed: CRITestBed, podID: String, id: String) async -> StatusAPI.ContainerStatus? {
    let socket = NodeLayout().statusSocket(
        forShimSocket: StartCommand.socketPath(
            containerdAddress: bed.containerd.socket,
            namespace: CRITestBed.criNamespace,
            group: podID
        )
    )
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

/// Every file under `root` with its bytes (relative paths).
func snapshot(_ root: String) -> [String: Data] {
    var out: [String: Data] = [:]
    guard let e = FileManager.default.enumerator(atPath: root) else { return out }
    while let rel = e.nextObject() as? String {
        var isDirectory: ObjCBool = false
        let path = root + "/" + rel
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            out[rel] = FileManager.default.contents(atPath: path)
        }
    }
    return out
}

@Suite(
    .serialized,
    .enabled(if: imageTestsAvailable, "needs root, runc, CRIU, gcc, the CNI plugins, umoci and jq (make setup)")
)
struct InstallerImageTests {
    @Test(arguments: ContainerdFlavor.all)
    func installerImage_asInitContainer_installsRestartsScalesUninstalls(flavor: ContainerdFlavor) async throws {
        let installer = try await imageArchive("installer")
        let scratch = "/tmp/\(uniqueName("zpimg"))"
        let opt = scratch + "/opt/zeropod"
        let etcZeropod = scratch + "/etc/zeropod"
        let podRun = scratch + "/run"  // the pod's /run/zeropod-swift: no shim of this node runs yet
        let linkDir = scratch + "/usr/local/bin"  // containerd < 1.7.1: the shim's link (not the machine's)
        for dir in [scratch, etcZeropod, podRun, scratch + "/usr", scratch + "/usr/local", linkDir] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            chmod(dir, 0o755)
        }
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        // The node the installer installs on: a containerd with CRI, the runc handler only, its config
        // in a folder of its own; the shims it starts read the throwaway node settings.
        var nodeOptions = CRITestBed.Options()
        nodeOptions.zeropodHandler = false
        nodeOptions.configSubfolder = "etc"
        // Where the installer links the shim for containerd 1.6 (a node's /usr/local/bin); the
        // build's shim is not on this node's PATH, so the pod can only run on the installed one.
        nodeOptions.path = [linkDir]
        try await withCRITestBed(
            flavor: flavor,
            tag: "imgnode",
            environment: ["ZEROPOD_NODE_CONFIG": etcZeropod + "/node.conf"],
            options: nodeOptions
        ) { node in
            // The kubelet's containerd, which runs the installer pod.
            try await withCRITestBed(flavor: flavor, tag: "imghost") { host in
                let started = ContinuousClock.now
                try host.importImage(archive: installer.archive)
                print("[zpimage] \(flavor.name): installer image imported in \(started.duration(to: .now))")
                let configPath = node.containerd.configPath
                let configFolder = String(configPath[..<configPath.lastIndex(of: "/")!])
                let original = try String(contentsOfFile: configPath, encoding: .utf8)
                let originalFolder = snapshot(configFolder)

                func installerPod(_ extra: [String]) -> (KubeletPod, CRI.ContainerConfig) {
                    var pod = host.pod(uniqueName("zeropod-node"), handler: CRITestBed.runcHandler)
                    pod.privileged = true
                    let config = pod.containerConfig(
                        "installer",
                        image: installer.ref,
                        args: [
                            "--config=\(configPath)", "--host-opt-path=\(opt)", "--node-config=\(etcZeropod)/node.conf",
                            "--containerd-address=\(node.containerd.socket)", "--no-runc-check",
                            "--shim-link-dir=\(linkDir)",
                        ] + extra,
                        mounts: [
                            CRI.Mount(samePath: configFolder), CRI.Mount(samePath: opt),
                            CRI.Mount(samePath: etcZeropod),
                            CRI.Mount(samePath: linkDir),
                            CRI.Mount(containerPath: "/run/zeropod-swift", hostPath: podRun),
                            CRI.Mount(samePath: node.containerd.socket), CRI.Mount(samePath: "/sys/fs/bpf"),
                            CRI.Mount(samePath: "/sys/fs/cgroup"),
                        ],
                        privileged: true
                    )
                    return (pod, config)
                }

                // 1. The init container installs.
                let (pod, config) = installerPod([])
                let (status, output) = try await runToCompletion(host, pod, config)
                print(
                    "[zpimage] \(flavor.name): installer exited \(status) after \(started.duration(to: .now)):\n\(output)"
                )
                try #require(status == 0, "the installer failed:\n\(output)")
                #expect(
                    output.contains("asked over \(node.containerd.socket)"),
                    "containerd's version not asked over its socket"
                )
                #expect(output.contains("no blockers"))
                #expect(
                    output.contains("containerd was not restarted")
                        && output.contains("Run: systemctl restart containerd")
                )
                let written = try String(contentsOfFile: configPath, encoding: .utf8)
                #expect(written != original)
                for file in ["bin/containerd-shim-zeropod-v2", "bin/criu"] {
                    #expect(FileManager.default.isExecutableFile(atPath: opt + "/" + file), "\(file) not installed")
                }
                #expect(FileManager.default.fileExists(atPath: etcZeropod + "/node.conf"))

                // 2. Again, as after a pod restart: nothing changes.
                let second = installerPod([])
                let (again, againOutput) = try await runToCompletion(host, second.0, second.1)
                #expect(again == 0 && againOutput.contains("containerd config unchanged: no restart"), "\(againOutput)")
                #expect(try String(contentsOfFile: configPath, encoding: .utf8) == written)

                // 3. What the installer said to run: restart the node's containerd; a zeropod pod on it.
                try await node.restartContainerd()
                let appPod = node.pod(
                    "counter-\(uniqueName("p"))",
                    handler: CRITestBed.zeropodHandler,
                    annotations: [
                        "zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080",
                    ],
                    containerPorts: [8080]
                )
                let (appPodID, ip, appID, first) = try await CounterApp.start(node, appPod)
                // By the executable (containerd 1.6 starts it through the link on its PATH).
                let shims = processes(matching: ["containerd-shim-zeropod-v2"]).filter {
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/exe"))
                        == opt + "/bin/containerd-shim-zeropod-v2"
                }
                #expect(!shims.isEmpty, "the pod does not run on the installed shim")
                var last = first
                var restoreSeen: ProtobufTimestamp? = nil
                for cycle in 1...2 {
                    var down: StatusAPI.ContainerStatus?
                    let scaledDown = await eventuallyAsync(within: 90, every: 0.1) {
                        down = await shimStatus(node, podID: appPodID, id: appID)
                        return down?.lifecyclePhase == .scaledDown && down?.lastRestore?.finishedAt == restoreSeen
                    }
                    try #require(
                        scaledDown,
                        "cycle \(cycle): never SCALED_DOWN: \(String(describing: down)); \(node.containerd.log(tail: 30))"
                    )
                    let next = await CounterApp.request(ip)
                    #expect(next == last + 1, "cycle \(cycle): count \(String(describing: next)) after \(last)")
                    last = next ?? last
                    var up: StatusAPI.ContainerStatus?
                    #expect(
                        await eventuallyAsync(within: 30, every: 0.05) {
                            up = await shimStatus(node, podID: appPodID, id: appID)
                            return up?.lastRestore?.finishedAt != restoreSeen
                        }
                    )
                    restoreSeen = up?.lastRestore?.finishedAt
                    print(
                        "[zpimage] \(flavor.name) cycle \(cycle): checkpoint \(down?.lastCheckpoint?.duration ?? .zero), restore \(up?.lastRestore?.duration ?? .zero), count=\(last)"
                    )
                }
                try await node.removePod(appPodID)

                // 4. --uninstall through the image: the config byte for byte, nothing of ours left.
                let uninstall = installerPod(["--uninstall"])
                let (removed, removeOutput) = try await runToCompletion(host, uninstall.0, uninstall.1)
                print("[zpimage] \(flavor.name): uninstall exited \(removed):\n\(removeOutput)")
                #expect(removed == 0, "\(removeOutput)")
                #expect(try String(contentsOfFile: configPath, encoding: .utf8) == original)
                #expect(snapshot(configFolder) == originalFolder, "the config folder differs from before the install")
                #expect(
                    ((try? FileManager.default.contentsOfDirectory(atPath: opt)) ?? ["?"]).isEmpty,
                    "left in \(opt)"
                )
                #expect(
                    ((try? FileManager.default.contentsOfDirectory(atPath: etcZeropod)) ?? ["?"]).isEmpty,
                    "left in \(etcZeropod)"
                )

                // 5. Restarted on the restored config, the node has no zeropod handler any more.
                try await node.restartContainerd()
                let refused = node.pod(uniqueName("after"), handler: CRITestBed.zeropodHandler)
                await #expect(throws: (any Error).self) { _ = try await node.runPodSandbox(refused) }
            }
        }
    }
}
