// The messages of the CRI (`runtime.v1`, k8s.io/cri-api 0.36 `api.proto`) that the test bed sends
// and reads, written by hand on ZPCore's protobuf codec (decision 0026): requests encode every
// field kubelet sets; responses decode the fields the tests look at and skip the rest.
import ZPCore

/// `runtime.v1` messages, by their proto names.
public enum CRI {
    /// `PodSandboxMetadata`: 1 name, 2 uid, 3 namespace, 4 attempt.
    public struct PodSandboxMetadata: Sendable, Equatable {
        /// The pod's name.
        public var name: String
        /// The pod's UID.
        public var uid: String
        /// The pod's Kubernetes namespace.
        public var namespace: String
        /// The sandbox attempt (0 for the first).
        public var attempt: UInt32 = 0

        /// Creates the metadata.
        public init(name: String, uid: String, namespace: String, attempt: UInt32 = 0) {
            (self.name, self.uid, self.namespace, self.attempt) = (name, uid, namespace, attempt)
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeStringIfNotDefault(field: 1, name)
            w.writeStringIfNotDefault(field: 2, uid)
            w.writeStringIfNotDefault(field: 3, namespace)
            w.writeUInt32IfNotDefault(field: 4, attempt)
        }
    }

    /// `DNSConfig`: 1 servers, 2 searches, 3 options.
    public struct DNSConfig: Sendable, Equatable {
        /// Name servers.
        public var servers: [String]
        /// Search domains.
        public var searches: [String]
        /// resolv.conf options.
        public var options: [String]

        /// Creates a DNS config.
        public init(servers: [String], searches: [String], options: [String]) {
            (self.servers, self.searches, self.options) = (servers, searches, options)
        }

        func encode(into w: inout ProtobufWriter) {
            for s in servers { w.writeString(field: 1, s) }
            for s in searches { w.writeString(field: 2, s) }
            for s in options { w.writeString(field: 3, s) }
        }
    }

    /// `PortMapping`: 1 protocol (TCP 0), 2 container_port, 3 host_port, 4 host_ip.
    public struct PortMapping: Sendable, Equatable {
        /// The container port.
        public var containerPort: Int32
        /// The host port (0: none).
        public var hostPort: Int32 = 0

        /// A TCP port mapping.
        public init(containerPort: Int32, hostPort: Int32 = 0) {
            (self.containerPort, self.hostPort) = (containerPort, hostPort)
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeInt32IfNotDefault(field: 2, containerPort)
            w.writeInt32IfNotDefault(field: 3, hostPort)
        }
    }

    /// `NamespaceMode`.
    public enum NamespaceMode: Int32, Sendable {
        /// Shared by the pod.
        case pod = 0
        /// The container's own.
        case container = 1
        /// The node's.
        case node = 2
    }

    /// `NamespaceOption`: 1 network, 2 pid, 3 ipc.
    public struct NamespaceOption: Sendable, Equatable {
        /// Network namespace mode.
        public var network: NamespaceMode
        /// PID namespace mode.
        public var pid: NamespaceMode
        /// IPC namespace mode.
        public var ipc: NamespaceMode

        /// What kubelet sends for a pod without host namespaces: network and IPC per pod, PID per
        /// container.
        public static let kubeletDefault = NamespaceOption(network: .pod, pid: .container, ipc: .pod)

        /// Creates the options.
        public init(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) {
            (self.network, self.pid, self.ipc) = (network, pid, ipc)
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeInt32IfNotDefault(field: 1, network.rawValue)
            w.writeInt32IfNotDefault(field: 2, pid.rawValue)
            w.writeInt32IfNotDefault(field: 3, ipc.rawValue)
        }
    }

    /// `SecurityProfile.ProfileType` (seccomp, AppArmor).
    public enum ProfileType: Int32, Sendable {
        /// The runtime's default profile.
        case runtimeDefault = 0
        /// No profile.
        case unconfined = 1
    }

    /// `Mount`: 1 container_path, 2 host_path, 3 readonly, 5 propagation (0 private, 1 host to
    /// container, 2 bidirectional): a pod spec's `hostPath` volume as kubelet passes it.
    public struct Mount: Sendable, Equatable {
        /// Where it appears in the container.
        public var containerPath: String
        /// The host folder or file.
        public var hostPath: String
        /// Read-only.
        public var readonly: Bool
        /// `MountPropagation` (kubelet's default: private).
        public var propagation: Int32

        /// A private (the kubelet default) bind mount of `hostPath` at `containerPath`.
        public init(containerPath: String, hostPath: String, readonly: Bool = false, propagation: Int32 = 0) {
            (self.containerPath, self.hostPath, self.readonly, self.propagation) =
                (containerPath, hostPath, readonly, propagation)
        }

        /// The host path at the same path inside the container (how the DaemonSet mounts its folders).
        public init(samePath path: String, readonly: Bool = false) {
            self.init(containerPath: path, hostPath: path, readonly: readonly)
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeStringIfNotDefault(field: 1, containerPath)
            w.writeStringIfNotDefault(field: 2, hostPath)
            w.writeBoolIfNotDefault(field: 3, readonly)
            w.writeInt32IfNotDefault(field: 5, propagation)
        }
    }

    /// `PodSandboxConfig`: 1 metadata, 2 hostname, 3 log_directory, 4 dns_config, 5 port_mappings,
    /// 6 labels, 7 annotations, 8 linux (`LinuxPodSandboxConfig`: 1 cgroup_parent,
    /// 2 security_context (`LinuxSandboxSecurityContext`: 1 namespace_options, 6 privileged,
    /// 9 seccomp), 3 sysctls).
    public struct PodSandboxConfig: Sendable, Equatable {
        /// Who the pod is.
        public var metadata: PodSandboxMetadata
        /// The pod's hostname.
        public var hostname: String
        /// `/var/log/pods/<namespace>_<name>_<uid>`.
        public var logDirectory: String
        /// The pod's DNS settings.
        public var dnsConfig: DNSConfig?
        /// The pod's container ports.
        public var portMappings: [PortMapping] = []
        /// Labels (`io.kubernetes.pod.*` and the pod's own).
        public var labels: [String: String] = [:]
        /// The pod's annotations.
        public var annotations: [String: String] = [:]
        /// `linux.cgroup_parent`: the pod's cgroup, e.g. `/kubepods/besteffort/pod<uid>`.
        public var cgroupParent: String
        /// `linux.security_context.namespace_options`.
        public var namespaceOptions: NamespaceOption = .kubeletDefault
        /// `linux.security_context.seccomp`.
        public var seccomp: ProfileType = .unconfined
        /// `linux.security_context.privileged`: the pod has a privileged container.
        public var privileged = false
        /// `linux.sysctls`.
        public var sysctls: [String: String] = [:]

        /// Creates a sandbox config.
        public init(metadata: PodSandboxMetadata, hostname: String, logDirectory: String, cgroupParent: String) {
            (self.metadata, self.hostname, self.logDirectory, self.cgroupParent) =
                (metadata, hostname, logDirectory, cgroupParent)
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeMessage(field: 1) { metadata.encode(into: &$0) }
            w.writeStringIfNotDefault(field: 2, hostname)
            w.writeStringIfNotDefault(field: 3, logDirectory)
            if let dnsConfig { w.writeMessage(field: 4) { dnsConfig.encode(into: &$0) } }
            for p in portMappings { w.writeMessage(field: 5) { p.encode(into: &$0) } }
            writeMap(&w, field: 6, labels)
            writeMap(&w, field: 7, annotations)
            w.writeMessage(field: 8) { linux in
                linux.writeStringIfNotDefault(field: 1, cgroupParent)
                linux.writeMessage(field: 2) { context in
                    context.writeMessage(field: 1) { namespaceOptions.encode(into: &$0) }
                    context.writeBoolIfNotDefault(field: 6, privileged)
                    context.writeMessage(field: 9) { $0.writeInt32IfNotDefault(field: 1, seccomp.rawValue) }
                }
                writeMap(&linux, field: 3, sysctls)
            }
        }
    }

    /// `LinuxContainerResources`: 1 cpu_period, 2 cpu_quota, 3 cpu_shares, 4 memory_limit_in_bytes,
    /// 5 oom_score_adj.
    public struct LinuxContainerResources: Sendable, Equatable {
        /// CFS period (kubelet: 100000).
        public var cpuPeriod: Int64 = 100_000
        /// CFS quota (0: none).
        public var cpuQuota: Int64 = 0
        /// CPU shares (kubelet: 2 for BestEffort).
        public var cpuShares: Int64 = 2
        /// Memory limit (0: none).
        public var memoryLimitInBytes: Int64 = 0
        /// OOM score adjustment (kubelet: 1000 for BestEffort).
        public var oomScoreAdj: Int64 = 1000

        /// What kubelet sends for a BestEffort container.
        public init() {}

        func encode(into w: inout ProtobufWriter) {
            w.writeInt64IfNotDefault(field: 1, cpuPeriod)
            w.writeInt64IfNotDefault(field: 2, cpuQuota)
            w.writeInt64IfNotDefault(field: 3, cpuShares)
            w.writeInt64IfNotDefault(field: 4, memoryLimitInBytes)
            w.writeInt64IfNotDefault(field: 5, oomScoreAdj)
        }
    }

    /// `ContainerConfig`: 1 metadata (1 name, 2 attempt), 2 image (`ImageSpec`: 1 image,
    /// 18 user_specified_image), 3 command, 4 args, 5 working_dir, 6 envs (`KeyValue`: 1 key,
    /// 2 value bytes), 7 mounts, 9 labels, 10 annotations, 11 log_path, 12 stdin, 13 stdin_once, 14 tty,
    /// 15 linux (`LinuxContainerConfig`: 1 resources, 2 security_context
    /// (`LinuxContainerSecurityContext`: 2 privileged, 3 namespace_options, 13 masked_paths,
    /// 14 readonly_paths, 15 seccomp)).
    public struct ContainerConfig: Sendable, Equatable {
        /// The container's name in the pod.
        public var name: String
        /// The restart attempt.
        public var attempt: UInt32 = 0
        /// The image reference (resolved, as kubelet passes it).
        public var image: String
        /// The image as the pod spec names it.
        public var userSpecifiedImage: String
        /// The entrypoint (pod spec `command`).
        public var command: [String] = []
        /// Its arguments (pod spec `args`).
        public var args: [String] = []
        /// The working directory.
        public var workingDir: String = ""
        /// Environment variables, in order.
        public var envs: [(String, String)] = []
        /// The pod's volumes as mounts (hostPath).
        public var mounts: [Mount] = []
        /// Labels (`io.kubernetes.container.name`, `io.kubernetes.pod.*`).
        public var labels: [String: String] = [:]
        /// Annotations (`io.kubernetes.container.*`).
        public var annotations: [String: String] = [:]
        /// The log file, relative to the sandbox's log directory: `<name>/<attempt>.log`.
        public var logPath: String
        /// Keep stdin open.
        public var stdin = false
        /// Close stdin after the first attach.
        public var stdinOnce = false
        /// A terminal.
        public var tty = false
        /// `linux.resources`.
        public var resources = LinuxContainerResources()
        /// `linux.security_context.namespace_options`.
        public var namespaceOptions: NamespaceOption = .kubeletDefault
        /// `linux.security_context.seccomp`.
        public var seccomp: ProfileType = .unconfined
        /// `linux.security_context.privileged` (kubelet then sends no masked or read-only paths).
        public var privileged = false
        /// The paths kubelet masks (its default list).
        public var maskedPaths = [
            "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
        ]
        /// The paths kubelet makes read-only (its default list).
        public var readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

        /// Creates a container config.
        public init(name: String, image: String, userSpecifiedImage: String, logPath: String) {
            (self.name, self.image, self.userSpecifiedImage, self.logPath) = (name, image, userSpecifiedImage, logPath)
        }

        /// Equal when every encoded field is equal.
        public static func == (a: ContainerConfig, b: ContainerConfig) -> Bool {
            var x = ProtobufWriter()
            var y = ProtobufWriter()
            a.encode(into: &x)
            b.encode(into: &y)
            return x.bytes == y.bytes
        }

        func encode(into w: inout ProtobufWriter) {
            w.writeMessage(field: 1) {
                $0.writeStringIfNotDefault(field: 1, name)
                $0.writeUInt32IfNotDefault(field: 2, attempt)
            }
            w.writeMessage(field: 2) {
                $0.writeStringIfNotDefault(field: 1, image)
                $0.writeStringIfNotDefault(field: 18, userSpecifiedImage)
            }
            for c in command { w.writeString(field: 3, c) }
            for a in args { w.writeString(field: 4, a) }
            w.writeStringIfNotDefault(field: 5, workingDir)
            for (key, value) in envs {
                w.writeMessage(field: 6) {
                    $0.writeString(field: 1, key)
                    $0.writeBytes(field: 2, Array(value.utf8))
                }
            }
            for m in mounts { w.writeMessage(field: 7) { m.encode(into: &$0) } }
            writeMap(&w, field: 9, labels)
            writeMap(&w, field: 10, annotations)
            w.writeStringIfNotDefault(field: 11, logPath)
            w.writeBoolIfNotDefault(field: 12, stdin)
            w.writeBoolIfNotDefault(field: 13, stdinOnce)
            w.writeBoolIfNotDefault(field: 14, tty)
            w.writeMessage(field: 15) { linux in
                linux.writeMessage(field: 1) { resources.encode(into: &$0) }
                linux.writeMessage(field: 2) { context in
                    context.writeBoolIfNotDefault(field: 2, privileged)
                    context.writeMessage(field: 3) { namespaceOptions.encode(into: &$0) }
                    for p in maskedPaths { context.writeString(field: 13, p) }
                    for p in readonlyPaths { context.writeString(field: 14, p) }
                    context.writeMessage(field: 15) { $0.writeInt32IfNotDefault(field: 1, seccomp.rawValue) }
                }
            }
        }
    }

    /// `PodSandboxState`.
    public enum PodSandboxState: Int32, Sendable {
        /// Ready.
        case ready = 0
        /// Not ready (stopped).
        case notReady = 1
    }

    /// `PodSandboxStatus` (what the tests read): 1 id, 3 state, 5 network (1 ip), 9 runtime_handler.
    public struct PodSandboxStatus: Sendable, Equatable {
        /// The sandbox id.
        public var id = ""
        /// Ready or not (nil: a value this client does not know); proto3 omits the default READY.
        public var state: PodSandboxState? = .ready
        /// The pod IP from CNI.
        public var ip = ""
        /// The runtime handler.
        public var runtimeHandler = ""

        init(decoding bytes: ArraySlice<UInt8>) throws(ProtobufError) {
            var r = ProtobufReader(bytes)
            while let f = try r.nextField() {
                switch f.number {
                case 1: id = try f.string(in: "PodSandboxStatus")
                case 3: state = PodSandboxState(rawValue: try f.int32(in: "PodSandboxStatus"))
                case 5:
                    var network = try f.message(in: "PodSandboxStatus")
                    while let n = try network.nextField() {
                        if n.number == 1 { ip = try n.string(in: "PodSandboxNetworkStatus") }
                    }
                case 9: runtimeHandler = try f.string(in: "PodSandboxStatus")
                default: continue
                }
            }
        }
    }

    /// `ContainerState`.
    public enum ContainerState: Int32, Sendable {
        /// Created, not started.
        case created = 0
        /// Running.
        case running = 1
        /// Exited.
        case exited = 2
        /// Unknown.
        case unknown = 3
    }

    /// `ContainerStatus` (what the tests read): 1 id, 2 metadata (1 name), 3 state, 5 started_at,
    /// 6 finished_at, 7 exit_code, 10 reason, 11 message, 13 annotations.
    public struct ContainerStatus: Sendable, Equatable {
        /// The container id.
        public var id = ""
        /// The container's name in the pod.
        public var name = ""
        /// Its state (nil: a value this client does not know); proto3 omits the default CREATED.
        public var state: ContainerState? = .created
        /// When it started (ns since the epoch).
        public var startedAt: Int64 = 0
        /// When it finished (ns since the epoch).
        public var finishedAt: Int64 = 0
        /// Its exit code.
        public var exitCode: Int32 = 0
        /// Why it is in this state.
        public var reason = ""
        /// More about it.
        public var message = ""

        init(decoding bytes: ArraySlice<UInt8>) throws(ProtobufError) {
            var r = ProtobufReader(bytes)
            while let f = try r.nextField() {
                switch f.number {
                case 1: id = try f.string(in: "ContainerStatus")
                case 2: name = try firstString(field: 1, of: f, in: "ContainerMetadata")
                case 3: state = ContainerState(rawValue: try f.int32(in: "ContainerStatus"))
                case 5: startedAt = try f.int64(in: "ContainerStatus")
                case 6: finishedAt = try f.int64(in: "ContainerStatus")
                case 7: exitCode = try f.int32(in: "ContainerStatus")
                case 10: reason = try f.string(in: "ContainerStatus")
                case 11: message = try f.string(in: "ContainerStatus")
                default: continue
                }
            }
        }
    }

    /// `Container` (ListContainers): 1 id, 2 pod_sandbox_id, 3 metadata (1 name), 6 state.
    public struct Container: Sendable, Equatable {
        /// The container id.
        public var id = ""
        /// Its pod sandbox.
        public var podSandboxID = ""
        /// Its name in the pod.
        public var name = ""
        /// Its state (nil: a value this client does not know); proto3 omits the default CREATED.
        public var state: ContainerState? = .created

        init(decoding bytes: ArraySlice<UInt8>) throws(ProtobufError) {
            var r = ProtobufReader(bytes)
            while let f = try r.nextField() {
                switch f.number {
                case 1: id = try f.string(in: "Container")
                case 2: podSandboxID = try f.string(in: "Container")
                case 3: name = try firstString(field: 1, of: f, in: "ContainerMetadata")
                case 6: state = ContainerState(rawValue: try f.int32(in: "Container"))
                default: continue
                }
            }
        }
    }

    /// `ContainerStats`: 1 attributes (1 id), 2 cpu (`CpuUsage`: 1 timestamp,
    /// 2 usage_core_nano_seconds, 3 usage_nano_cores), 3 memory (`MemoryUsage`: 1 timestamp,
    /// 2 working_set_bytes, 3 available_bytes, 4 usage_bytes, 5 rss_bytes, 6 page_faults,
    /// 7 major_page_faults), 4 writable_layer. The `UInt64Value` wrappers are nil when absent.
    public struct ContainerStats: Sendable, Equatable {
        /// The container id from the attributes.
        public var id = ""
        /// Whether a `cpu` message came.
        public var hasCPU = false
        /// `cpu.timestamp`.
        public var cpuTimestamp: Int64 = 0
        /// `cpu.usage_core_nano_seconds`.
        public var cpuUsageCoreNanoSeconds: UInt64? = nil
        /// `cpu.usage_nano_cores`.
        public var cpuUsageNanoCores: UInt64? = nil
        /// Whether a `memory` message came.
        public var hasMemory = false
        /// `memory.timestamp`.
        public var memoryTimestamp: Int64 = 0
        /// `memory.working_set_bytes`.
        public var workingSetBytes: UInt64? = nil
        /// `memory.usage_bytes`.
        public var memoryUsageBytes: UInt64? = nil
        /// `memory.rss_bytes`.
        public var rssBytes: UInt64? = nil
        /// Whether a `writable_layer` message came.
        public var hasWritableLayer = false

        init(decoding bytes: ArraySlice<UInt8>) throws(ProtobufError) {
            var r = ProtobufReader(bytes)
            while let f = try r.nextField() {
                switch f.number {
                case 1: id = try firstString(field: 1, of: f, in: "ContainerAttributes")
                case 2:
                    hasCPU = true
                    var cpu = try f.message(in: "CpuUsage")
                    while let c = try cpu.nextField() {
                        switch c.number {
                        case 1: cpuTimestamp = try c.int64(in: "CpuUsage")
                        case 2: cpuUsageCoreNanoSeconds = try wrapped(c)
                        case 3: cpuUsageNanoCores = try wrapped(c)
                        default: continue
                        }
                    }
                case 3:
                    hasMemory = true
                    var memory = try f.message(in: "MemoryUsage")
                    while let m = try memory.nextField() {
                        switch m.number {
                        case 1: memoryTimestamp = try m.int64(in: "MemoryUsage")
                        case 2: workingSetBytes = try wrapped(m)
                        case 4: memoryUsageBytes = try wrapped(m)
                        case 5: rssBytes = try wrapped(m)
                        default: continue
                        }
                    }
                case 4: hasWritableLayer = true
                default: continue
                }
            }
        }
    }

    /// `ExecSyncResponse`: 1 stdout, 2 stderr, 3 exit_code.
    public struct ExecSyncResult: Sendable, Equatable {
        /// What the command wrote to stdout.
        public var stdout: [UInt8] = []
        /// What it wrote to stderr.
        public var stderr: [UInt8] = []
        /// Its exit code.
        public var exitCode: Int32 = 0

        /// stdout as text.
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

        init(decoding bytes: [UInt8]) throws(ProtobufError) {
            var r = ProtobufReader(bytes)
            while let f = try r.nextField() {
                switch f.number {
                case 1: stdout = Array(try f.bytes(in: "ExecSyncResponse"))
                case 2: stderr = Array(try f.bytes(in: "ExecSyncResponse"))
                case 3: exitCode = try f.int32(in: "ExecSyncResponse")
                default: continue
                }
            }
        }
    }
}

/// A `map<string, string>` field: one entry message (1 key, 2 value) per pair, sorted by key so
/// the bytes are stable.
func writeMap(_ w: inout ProtobufWriter, field: Int, _ map: [String: String]) {
    for (key, value) in map.sorted(by: { $0.key < $1.key }) {
        w.writeMessage(field: field) {
            $0.writeString(field: 1, key)
            $0.writeString(field: 2, value)
        }
    }
}

/// The first string field number `field` inside the message field `f`.
func firstString(field: Int, of f: ProtobufField, in message: String) throws(ProtobufError) -> String {
    var inner = try f.message(in: message)
    while let g = try inner.nextField() { if g.number == field { return try g.string(in: message) } }
    return ""
}

/// The value of a `UInt64Value` wrapper message field.
private func wrapped(_ f: ProtobufField) throws(ProtobufError) -> UInt64 {
    var inner = try f.message(in: "UInt64Value")
    var value: UInt64 = 0
    while let g = try inner.nextField() { if g.number == 1 { value = try g.uint64(in: "UInt64Value") } }
    return value
}

/// Decodes the first occurrence of message field `field` of `bytes` with `decode`, or nil.
func decodeField<T>(
    _ field: Int,
    of bytes: [UInt8],
    in message: String,
    _ decode: (ArraySlice<UInt8>) throws(ProtobufError) -> T
) throws(ProtobufError) -> T? {
    var r = ProtobufReader(bytes)
    while let f = try r.nextField() { if f.number == field { return try decode(try f.bytes(in: message)) } }
    return nil
}

/// Every occurrence of message field `field` of `bytes`, decoded with `decode`.
func decodeRepeated<T>(
    _ field: Int,
    of bytes: [UInt8],
    in message: String,
    _ decode: (ArraySlice<UInt8>) throws(ProtobufError) -> T
) throws(ProtobufError) -> [T] {
    var r = ProtobufReader(bytes)
    var out: [T] = []
    while let f = try r.nextField() { if f.number == field { out.append(try decode(try f.bytes(in: message))) } }
    return out
}
