// What kubelet sends for a pod: the sandbox config and container configs with its labels,
// annotations, log paths, DNS, cgroup parent and security context (kubelet 1.36's
// kuberuntime_sandbox.go / kuberuntime_container.go, BestEffort QoS, cgroupfs driver).
import Foundation

/// A pod as kubelet describes it to the CRI.
public struct KubeletPod: Sendable {
    /// The pod's name.
    public var name: String
    /// The pod's Kubernetes namespace.
    public var namespace: String
    /// The pod's UID.
    public var uid: String
    /// The RuntimeClass handler (`zeropod`, or `runc` for the control).
    public var handler: String
    /// The pod's own labels (kubelet adds `io.kubernetes.pod.*`).
    public var labels: [String: String]
    /// The pod's annotations (the sandbox config carries them; containerd forwards the ones its
    /// runtime's `pod_annotations` lists into every container's OCI spec).
    public var annotations: [String: String]
    /// The QoS cgroup the pod's cgroup goes under, e.g. `/kubepods/besteffort`.
    public var qosCgroup: String
    /// The container ports of the pod spec (kubelet passes them as port mappings).
    public var containerPorts: [Int32]
    /// `hostNetwork: true`: the node's network namespace (no CNI, no pod IP of its own).
    public var hostNetwork = false
    /// The pod has a privileged container (kubelet then marks the sandbox privileged too).
    public var privileged = false
    /// With systemd's cgroup driver, the name of the top slice (kubelet's `kubepods`): the pod's
    /// cgroup parent is then `<top>-besteffort-pod<uid>.slice` (what kubelet sends with
    /// `cgroupDriver: systemd`); nil for the cgroupfs driver.
    public var systemdSlice: String?

    /// A pod named `name` with a fresh UID.
    public init(
        name: String,
        namespace: String = "default",
        handler: String,
        labels: [String: String] = [:],
        annotations: [String: String] = [:],
        qosCgroup: String,
        containerPorts: [Int32] = [],
        systemdSlice: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.uid = UUID().uuidString.lowercased()
        self.handler = handler
        self.labels = labels
        self.annotations = annotations
        self.qosCgroup = qosCgroup
        self.containerPorts = containerPorts
        self.systemdSlice = systemdSlice
    }

    /// kubelet's pod log folder: `/var/log/pods/<namespace>_<name>_<uid>`.
    public var logDirectory: String { "/var/log/pods/\(namespace)_\(name)_\(uid)" }

    /// The pod's cgroup parent as kubelet sends it: `<qos>/pod<uid>` (cgroupfs driver), or the
    /// slice `<top>-besteffort-pod<uid with _ for ->.slice` (systemd driver).
    public var cgroupParent: String {
        guard let top = systemdSlice else { return "\(qosCgroup)/pod\(uid)" }
        return "\(top)-besteffort-pod\(uid.replacingOccurrences(of: "-", with: "_")).slice"
    }

    /// The pod's cgroup folder below a hierarchy's root: the parent itself (cgroupfs), or the slice
    /// expanded as systemd (and runc's systemd driver) nests it: `/a.slice/a-b.slice/a-b-c.slice`.
    public var cgroupFolder: String {
        guard systemdSlice != nil else { return cgroupParent }
        let parts = cgroupParent.dropLast(".slice".count).split(separator: "-")
        return (1...parts.count).map { "/" + parts.prefix($0).joined(separator: "-") + ".slice" }.joined()
    }

    /// The cgroup folder of container `id` below a hierarchy's root, where runc puts it: the
    /// parent plus the id (cgroupfs, `cgroupsPath` = parent/id), or the scope unit
    /// `cri-containerd-<id>.scope` in the pod's slice (containerd's `slice:cri-containerd:id`).
    public func containerCgroupFolder(_ id: String) -> String {
        systemdSlice == nil ? "\(cgroupParent)/\(id)" : "\(cgroupFolder)/cri-containerd-\(id).scope"
    }

    /// The labels kubelet puts on the sandbox and on every container.
    public var podLabels: [String: String] {
        labels.merging([
            "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid,
        ]) { $1 }
    }

    /// `RunPodSandbox`'s config as kubelet builds it.
    public var sandboxConfig: CRI.PodSandboxConfig {
        var config = CRI.PodSandboxConfig(
            metadata: .init(name: name, uid: uid, namespace: namespace),
            hostname: hostNetwork ? "" : name,  // kubelet sends no hostname for a host-network pod (host UTS)
            logDirectory: logDirectory,
            cgroupParent: cgroupParent
        )
        config.dnsConfig = CRI.DNSConfig(
            servers: ["10.96.0.10"],
            searches: ["\(namespace).svc.cluster.local", "svc.cluster.local", "cluster.local"],
            options: ["ndots:5"]
        )
        config.portMappings = containerPorts.map { CRI.PortMapping(containerPort: $0) }
        config.labels = podLabels
        if hostNetwork { config.namespaceOptions.network = .node }
        config.privileged = privileged
        config.annotations = annotations.merging([
            "kubernetes.io/config.source": "api", "kubernetes.io/config.seen": "2026-12-06T00:00:00.000000000Z",
        ]) { a, _ in a }
        return config
    }

    /// `CreateContainer`'s config for container `name` of this pod as kubelet builds it (restart
    /// count 0, termination message in /dev/termination-log).
    public func containerConfig(
        _ containerName: String,
        image: String,
        command: [String] = [],
        args: [String] = [],
        env: [(String, String)] = [],
        tty: Bool = false,
        stdin: Bool = false,
        mounts: [CRI.Mount] = [],
        privileged: Bool = false
    ) -> CRI.ContainerConfig {
        var config = CRI.ContainerConfig(
            name: containerName,
            image: image,
            userSpecifiedImage: image,
            logPath: "\(containerName)/0.log"
        )
        config.command = command
        config.args = args
        config.envs = env + [("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("KUBERNETES_SERVICE_PORT", "443")]
        config.labels = [
            "io.kubernetes.container.name": containerName, "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid,
        ]
        config.annotations = [
            "io.kubernetes.container.hash": String(fnv1a(containerName), radix: 16),
            "io.kubernetes.container.restartCount": "0",
            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
            "io.kubernetes.container.terminationMessagePolicy": "File",
            "io.kubernetes.pod.terminationGracePeriod": "30",
        ]
        config.tty = tty
        config.stdin = stdin
        config.mounts = mounts
        if hostNetwork { config.namespaceOptions.network = .node }
        if privileged {
            // kubelet sends no masked or read-only paths for a privileged container.
            config.privileged = true
            config.maskedPaths = []
            config.readonlyPaths = []
        }
        return config
    }
}

/// FNV-1a (32 bit) of `text`'s UTF-8: a stable stand-in for kubelet's container hash (Swift's
/// `hashValue` is seeded per process).
func fnv1a(_ text: String) -> UInt32 {
    text.utf8.reduce(0x811c_9dc5 as UInt32) { ($0 ^ UInt32($1)) &* 0x0100_0193 }
}
