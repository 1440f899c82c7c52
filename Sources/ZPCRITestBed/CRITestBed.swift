// containerd with its CRI plugin on, driven the way kubelet drives it (issue 18, item 1).
import Foundation
import Glibc
import Synchronization
import ZPTestSupport

/// A containerd (1.6 or 2.x) of the test's own with the CRI plugin on: handler `zeropod` (our
/// shim, from the build folder on containerd's PATH) beside a `runc` control handler, both
/// forwarding `zeropod.ctrox.dev/*` and `zeropod-swift/*` annotations; CNI from Debian's
/// containernetworking-plugins (bridge + host-local on a private /24, its own bridge, conf and
/// IPAM folders); pause and workload images built locally (scripts/cri-images.sh) and imported;
/// `restrict_oom_score_adj = true` (no CAP_SYS_RESOURCE on these machines). ``stop()`` removes the
/// pods it still knows, containerd, the bridge, the pods' cgroups and log folders.
public final class CRITestBed {
    /// The RuntimeClass handler that runs our shim.
    public static let zeropodHandler = "zeropod"
    /// The control handler (containerd-shim-runc-v2).
    public static let runcHandler = "runc"
    /// The annotation prefixes containerd forwards to the shims.
    public static let forwardedAnnotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]
    /// The CRI plugin's containerd namespace (fixed by containerd).
    public static let criNamespace = "k8s.io"

    /// What a bed's containerd config holds beyond the defaults.
    public struct Options: Sendable {
        /// Whether the config has the `zeropod` handler (the debug build's shim on containerd's
        /// PATH). Without it, the config is a node's before the installer ran: `runc` only, and
        /// no shim of ours on containerd's PATH (containerd 1.6 would find the build's there).
        public var zeropodHandler = true
        /// Folders first on containerd's PATH, e.g. a test's stand-in for `/usr/local/bin` where
        /// an installer links the shim for containerd 1.6.
        public var path: [String] = []
        /// The config file's folder under containerd's folder (see `PrivateContainerd`).
        public var configSubfolder = ""
        /// Turns the generated config into the one containerd starts with (given containerd's
        /// folder and the pause image), e.g. an installer's output.
        public var rewrite: (@Sendable (_ config: String, _ directory: String, _ pauseImage: String) -> String)? = nil

        /// The defaults: both handlers, the config in containerd's folder.
        public init() {}
    }

    /// A further runtime handler of the bed's containerd, e.g. our shim configured the way the
    /// installer adds it (`runtime_type = "io.containerd.runc.v2"`, `runtime_path` = the shim),
    /// under which the CRI plugin passes the handler's `options` table as runc options.
    public struct Handler: Sendable {
        /// The RuntimeClass handler name.
        public var name: String
        /// `runtime_type`.
        public var runtimeType: String
        /// `runtime_path` (containerd 1.6+), or nil.
        public var runtimePath: String?
        /// The `options` table: key → TOML value text (`"\"/path\""`, `true`, `1234`).
        public var options: [String: String]

        /// A handler.
        public init(
            name: String,
            runtimeType: String = "io.containerd.runc.v2",
            runtimePath: String? = nil,
            options: [String: String] = [:]
        ) {
            self.name = name
            self.runtimeType = runtimeType
            self.runtimePath = runtimePath
            self.options = options
        }

        /// Our shim (the debug build's) under `runtime_type = "io.containerd.runc.v2"`, as the
        /// installer configures the `zeropod` handler, with runc options `options`.
        public static func zeropodAsInstalled(name: String, options: [String: String]) -> Handler {
            Handler(name: name, runtimePath: TestPaths.buildDirectory + "/containerd-shim-zeropod-v2", options: options)
        }
    }

    /// The containerd under test.
    public let containerd: PrivateContainerd
    private let clientBox: Mutex<CRIClient>
    /// The kubelet-side client (a new one after ``restartContainerd()``).
    public var client: CRIClient { clientBox.withLock { $0 } }
    /// The pause image's reference (the sandbox image).
    public let pauseImage: String
    /// The busybox workload image's reference.
    public let busyboxImage: String
    /// The CNI bridge in the node's network namespace.
    public let bridge: String
    /// The pods' subnet, e.g. `10.89.17.0/24`: one the host does not use yet (``unusedSubnet(_:)``).
    public let subnet: String
    /// The bridge's address: the node's address as the pods see it (where kubelet probes come from).
    public let nodeAddress: String
    /// The cgroup under which the pods' cgroups go (`/<name>/besteffort`), like kubelet's `/kubepods`.
    public let qosCgroup: String
    /// The top slice of pods made with systemd's cgroup driver (`bed.pod(..., systemdCgroups: true)`),
    /// like kubelet's `kubepods`: a name without `-`.
    public let systemdSlice: String
    private let cgroupRoot: String
    private let pods = Mutex<[String: KubeletPod]>([:])
    private let stopped = Atomic<Bool>(false)

    /// Builds the images (cached), writes the CNI and CRI configs, starts containerd, imports the
    /// images and connects the client.
    /// - Parameters:
    ///   - tag: a short word for names (`zpshim-<tag>-<random>` folders, `zpcri<random>` bridge).
    ///   - environment: extra environment for containerd and the shims.
    /// - Throws: ``LabError`` when a step fails, with its output.
    ///   - options: what the config holds beyond the defaults (``Options``).
    ///   - handlers: further handlers, given containerd's folder (for paths inside it).
    public init(
        flavor: ContainerdFlavor,
        tag: String,
        environment: [String: String] = [:],
        options: Options = Options(),
        handlers: @escaping @Sendable (_ directory: String) -> [Handler] = { _ in [] }
    ) async throws {
        let images = try run([TestPaths.packageRoot + "/scripts/cri-images.sh", "pause", "busybox"], timeout: 900)
        guard images.status == 0 else { throw LabError("scripts/cri-images.sh failed: \(images.stderr)") }
        var refs: [String: (ref: String, archive: String)] = [:]
        for line in images.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.count == 3 { refs[fields[0]] = (fields[1], fields[2]) }
        }
        guard let pause = refs["pause"], let busybox = refs["busybox"] else {
            throw LabError("scripts/cri-images.sh printed no images: \(images.stdout)")
        }
        pauseImage = pause.ref
        busyboxImage = busybox.ref
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        bridge = "zpcri\(suffix.prefix(8))"
        let prefix = try unusedSubnet("10.89.")
        subnet = prefix + "0/24"
        nodeAddress = prefix + "1"
        cgroupRoot = "zpcri-\(suffix)"
        qosCgroup = "/\(cgroupRoot)/besteffort"
        systemdSlice = "zpcri\(suffix)"
        let (bridge, subnet, pauseRef) = (bridge, subnet, pause.ref)
        let zeropodHandler = options.zeropodHandler
        var configuration = PrivateContainerd.Configuration(environment: environment) { directory in
            Self.criConfig(
                flavor: flavor,
                directory: directory,
                pauseImage: pauseRef,
                zeropodHandler: zeropodHandler,
                handlers: handlers(directory)
            )
        }
        configuration.configSubfolder = options.configSubfolder
        configuration.shimOnPath = options.zeropodHandler
        configuration.path = options.path
        if let rewrite = options.rewrite {
            configuration.rewrite = { config, directory in rewrite(config, directory, pauseRef) }
        }
        let containerd = try PrivateContainerd(flavor: flavor, tag: tag, configuration: configuration)
        self.containerd = containerd
        do {
            try FileManager.default.createDirectory(
                atPath: containerd.directory + "/cni",
                withIntermediateDirectories: true
            )
            let conflist = """
                {"cniVersion":"1.0.0","name":"\(bridge)","plugins":[{"type":"bridge","bridge":"\(bridge)",\
                "isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local",\
                "ranges":[[{"subnet":"\(subnet)"}]],"routes":[{"dst":"0.0.0.0/0"}],\
                "dataDir":"\(containerd.directory)/ipam"}}]}
                """
            try Data(conflist.utf8).write(to: URL(fileURLWithPath: containerd.directory + "/cni/10-zpcri.conflist"))
            for image in [pause, busybox] {
                try containerd.ctr(["images", "import", image.archive], timeout: 300, namespace: Self.criNamespace)
                    .checked()
            }
            clientBox = Mutex(try await CRIClient(socket: containerd.socket))
        } catch {
            containerd.stop()
            throw error
        }
    }

    /// The CRI part of containerd's config, in the flavor's schema (version 2 for 1.6, 3 for 2.x).
    static func criConfig(
        flavor: ContainerdFlavor,
        directory: String,
        pauseImage: String,
        zeropodHandler: Bool = true,
        handlers: [Handler] = []
    ) -> String {
        let forwarded = forwardedAnnotations.map { "\"\($0)\"" }.joined(separator: ", ")
        let runtimes = { (prefix: String) in
            var text = """
                [\(prefix).containerd]
                  default_runtime_name = "runc"
                  [\(prefix).containerd.runtimes.runc]
                    runtime_type = "io.containerd.runc.v2"
                    [\(prefix).containerd.runtimes.runc.options]
                      Root = "\(directory)/runc"
                """
            if zeropodHandler {
                text += """

                      [\(prefix).containerd.runtimes.zeropod]
                        runtime_type = "io.containerd.zeropod.v2"
                        pod_annotations = [\(forwarded)]
                        container_annotations = [\(forwarded)]
                    """
            }
            for handler in handlers {
                text += "\n  [\(prefix).containerd.runtimes.\(handler.name)]\n"
                text += "    runtime_type = \"\(handler.runtimeType)\"\n"
                if let path = handler.runtimePath { text += "    runtime_path = \"\(path)\"\n" }
                text += "    pod_annotations = [\(forwarded)]\n    container_annotations = [\(forwarded)]\n"
                if !handler.options.isEmpty {
                    text += "    [\(prefix).containerd.runtimes.\(handler.name).options]\n"
                    for (key, value) in handler.options.sorted(by: { $0.key < $1.key }) {
                        text += "      \(key) = \(value)\n"
                    }
                }
            }
            return text
        }
        if flavor.majorVersion == 1 {
            let cri = "plugins.\"io.containerd.grpc.v1.cri\""
            return """
                [\(cri)]
                  sandbox_image = "\(pauseImage)"
                  restrict_oom_score_adj = true
                  stream_server_address = "127.0.0.1"
                  stream_server_port = "0"
                \(runtimes(cri))
                [\(cri).cni]
                  bin_dir = "/usr/lib/cni"
                  conf_dir = "\(directory)/cni"
                  max_conf_num = 1
                """
        }
        let runtime = "plugins.\"io.containerd.cri.v1.runtime\""
        return """
            [plugins."io.containerd.cri.v1.images"]
              snapshotter = "overlayfs"
              [plugins."io.containerd.cri.v1.images".pinned_images]
                sandbox = "\(pauseImage)"
            [\(runtime)]
              restrict_oom_score_adj = true
              enable_cdi = false
            \(runtimes(runtime))
            [\(runtime).cni]
              bin_dirs = ["/usr/lib/cni"]
              conf_dir = "\(directory)/cni"
              max_conf_num = 1
            [plugins."io.containerd.grpc.v1.cri"]
              stream_server_address = "127.0.0.1"
              stream_server_port = "0"
            [plugins."io.containerd.nri.v1.nri"]
              disable = true
            """
    }

    /// A pod of this bed (its cgroup goes under ``qosCgroup``).
    public func pod(
        _ name: String,
        handler: String,
        labels: [String: String] = [:],
        annotations: [String: String] = [:],
        containerPorts: [Int32] = [],
        systemdCgroups: Bool = false
    ) -> KubeletPod {
        KubeletPod(
            name: name,
            handler: handler,
            labels: labels,
            annotations: annotations,
            qosCgroup: qosCgroup,
            containerPorts: containerPorts,
            systemdSlice: systemdCgroups ? systemdSlice : nil
        )
    }

    /// What kubelet does to start a pod: makes its log folder, `RunPodSandbox` with the pod's
    /// handler, `PodSandboxStatus` for its IP. The bed removes the pod on ``stop()`` if the test
    /// has not.
    /// - Returns: the sandbox id and the pod IP.
    /// - Throws: ``GRPCCallError`` or ``LabError``.
    public func runPodSandbox(_ pod: KubeletPod) async throws -> (id: String, ip: String) {
        try FileManager.default.createDirectory(atPath: pod.logDirectory, withIntermediateDirectories: true)
        let id = try await client.runPodSandbox(pod.sandboxConfig, handler: pod.handler)
        pods.withLock { $0[id] = pod }
        let status = try await client.podSandboxStatus(id)
        guard status.state == .ready, !status.ip.isEmpty || pod.hostNetwork else {
            throw LabError("sandbox \(id) of \(pod.name): state \(String(describing: status.state)), ip '\(status.ip)'")
        }
        return (id, status.ip)
    }

    /// `CreateContainer` + `StartContainer` in sandbox `podID`; returns the container id.
    /// - Throws: ``GRPCCallError``.
    public func startContainer(
        _ config: CRI.ContainerConfig,
        in podID: String,
        of pod: KubeletPod
    ) async throws -> String {
        let id = try await client.createContainer(podID: podID, config, sandboxConfig: pod.sandboxConfig)
        try await client.startContainer(id)
        return id
    }

    /// What kubelet does to delete a pod: `StopContainer` (with the grace period
    /// `gracePeriod`, seconds) and `RemoveContainer` for each of its containers, `StopPodSandbox`,
    /// `RemovePodSandbox`, then its pod cgroup (kubelet's pod container manager removes it; runc
    /// only removes the containers' cgroups below it, so `rmdir` fails while one is left) and its
    /// log folder.
    /// - Throws: ``GRPCCallError``.
    public func removePod(_ podID: String, gracePeriod: Int64 = 1) async throws {
        for container in try await client.listContainers(podID: podID) {
            try await client.stopContainer(container.id, timeout: gracePeriod)
            try await client.removeContainer(container.id)
        }
        try await client.stopPodSandbox(podID)
        try await client.removePodSandbox(podID)
        if let pod = pods.withLock({ $0.removeValue(forKey: podID) }) {
            for path in cgroups(of: pod) { _ = rmdir(path) }
            try? FileManager.default.removeItem(atPath: pod.logDirectory)
        }
    }

    /// The pod cgroup folders of `pod` that still exist, in every hierarchy.
    public func cgroups(of pod: KubeletPod) -> [String] {
        cgroupHierarchies().map { $0 + pod.cgroupFolder }.filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// The processes of container `containerID` of `pod`: its cgroup's `cgroup.procs` (runc puts
    /// a CRI container at `<cgroup parent>/<container id>`, or with systemd's driver in the scope
    /// `cri-containerd-<id>.scope` of the pod's slice), from the first hierarchy that has it.
    public func processes(ofContainer containerID: String, in pod: KubeletPod) -> [Int32] {
        for hierarchy in cgroupHierarchies() {
            let path = hierarchy + pod.containerCgroupFolder(containerID) + "/cgroup.procs"
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                return text.split(separator: "\n").compactMap { Int32($0) }
            }
        }
        return []
    }

    /// The root of every cgroup hierarchy (v1 controllers and v2), e.g. `/sys/fs/cgroup/memory`.
    public func cgroupHierarchies() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
        let dirs = names.map { "/sys/fs/cgroup/\($0)" }.filter { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        return dirs + ["/sys/fs/cgroup"]
    }

    /// Imports an OCI image archive into the CRI plugin's namespace (what `ctr -n k8s.io images
    /// import` does on a node without a registry).
    /// - Throws: ``LabError`` with ctr's output.
    public func importImage(archive: String) throws {
        try containerd.ctr(["images", "import", archive], timeout: 600, namespace: Self.criNamespace).checked()
    }

    /// Stops containerd and starts it again on the same config (re-read) and state, then connects
    /// a new client: what a node does after the installer changed containerd's config.
    /// - Throws: ``LabError`` when containerd does not come back.
    public func restartContainerd() async throws {
        await client.close()
        try containerd.restart()
        let fresh = try await CRIClient(socket: containerd.socket)
        clientBox.withLock { $0 = fresh }
    }

    /// Removes the pods the test left, stops containerd, deletes the bridge, the pods' cgroups
    /// under ``qosCgroup`` and their log folders. Idempotent.
    public func stop() async {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for id in pods.withLock({ Array($0.keys) }) { try? await removePod(id) }
        await client.close()
        containerd.stop()
        _ = try? run(["ip", "link", "del", bridge], timeout: 20)
        for hierarchy in cgroupHierarchies() {
            removeCgroupTree(hierarchy + "/" + cgroupRoot)
            removeCgroupTree(hierarchy + "/" + systemdSlice + ".slice")
        }
        for pod in pods.withLock({ Array($0.values) }) { try? FileManager.default.removeItem(atPath: pod.logDirectory) }
    }
}

/// Runs `body` with a new test bed and stops the bed afterwards, whether `body` returned or threw.
/// - Throws: what the bed's start or `body` threw.
public func withCRITestBed<R>(
    flavor: ContainerdFlavor,
    tag: String,
    environment: [String: String] = [:],
    options: CRITestBed.Options = CRITestBed.Options(),
    handlers: @escaping @Sendable (_ directory: String) -> [CRITestBed.Handler] = { _ in [] },
    _ body: (CRITestBed) async throws -> R
) async throws -> R {
    let bed = try await CRITestBed(
        flavor: flavor,
        tag: tag,
        environment: environment,
        options: options,
        handlers: handlers
    )
    do {
        let result = try await body(bed)
        await bed.stop()
        return result
    } catch {
        await bed.stop()
        throw error
    }
}

/// Removes an (empty of processes) cgroup folder and its children, deepest first.
private func removeCgroupTree(_ path: String) {
    guard let children = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
    for child in children {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path + "/" + child, isDirectory: &isDirectory), isDirectory.boolValue
        {
            removeCgroupTree(path + "/" + child)
        }
    }
    _ = rmdir(path)
}
