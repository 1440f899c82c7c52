import CZPBPF
import Glibc
import Synchronization
import SystemPackage
import ZPCore
import ZPSystem

/// Steers new TCP connections of chosen ports in one pod's network namespace to the activator,
/// and tracks per-port client activity, with the programs of `bpf/zpbpf.bpf.c`.
///
/// - Redirect: an sk_lookup program attached to the pod netns (bpf_link_create, BPF_SK_LOOKUP)
///   assigns a new connection for port P to the socket registered for P (SOCKHASH) while the
///   redirect for P is on. The accepted socket's local address is the one the client dialled,
///   so the activator learns the original port from getsockname. Established connections never
///   reach sk_lookup and survive every switch.
/// - Activity: a tcx ingress link on every interface of the pod netns stamps the last client
///   segment per tracked port; the node's one sockops program on the cgroup v2 root (shared by
///   every pod of the node, decision 0052) finds the pod by its netns cookie and counts open
///   server-side connections. Probe sources never count; loopback sources count unless
///   `ignoreLoopback`.
/// - kubelet: the node's sockops program records the connections that kubelet opens from the
///   node's network namespace (at TCP_CONNECT_CB, in the connecting task: a process whose thread
///   group leader is named like ``kubeletProcessNames``); their traffic never counts, while other
///   connections from the node's address do (decision 0040).
///
/// One instance owns every descriptor of its pod (programs are held by their links, maps and
/// links by this object, as ZPSystem `SharedDescriptor`s behind its lock) and releases each
/// exactly once: `close()` (or deinit) drops this process's references, which detaches everything
/// unless it is pinned; `remove()` also unpins. The node object is shared through bpffs pins
/// (``defaultNodePinRoot``) and removed with the node's last pod. All methods are thread-safe.
public final class PodRedirector: Sendable {
    /// Ports per pod: the size of every per-port map.
    public static let maxPorts = 128
    /// Probe source addresses per pod: the size of the probe source map.
    public static let maxProbeSources = 64
    /// Where pods are pinned by default: `<bpffs>/zeropod/<pod-id>/`.
    public static let defaultPinRoot: FilePath = "/sys/fs/bpf/zeropod"
    /// Where the node-wide sockops object is pinned by default:
    /// `<bpffs>/zeropod-node/n-<object>-<settings>/` (decision 0052).
    public static let defaultNodePinRoot: FilePath = "/sys/fs/bpf/zeropod-node"
    /// Pods per node object (the size of the node's per-pod maps).
    public static let maxPodsPerNode = 4096
    /// The processes whose connections are kubelet's, by default: `kubelet` (kubeadm, EKS, GKE,
    /// AKS, rke2, k0s, kind), `k3s`, `k3s-server`, `k3s-agent` (k3s runs kubelet inside its own
    /// binary) and `kubelite` (MicroK8s). Matched against the thread group leader's name (comm),
    /// so threads a client library renamed still count.
    public static let kubeletProcessNames = ["kubelet", "k3s", "k3s-server", "k3s-agent", "kubelite"]
    /// At most this many kubelet process names.
    public static let maxKubeletProcessNames = 16
    /// The size of the node's LRU map of kubelet's open connections (entries leave when the
    /// connection closes; the LRU bound only matters if a close was missed).
    public static let maxKubeletConnections = 4096

    /// Settings of one pod's redirector.
    public struct Options: Sendable {
        /// Source addresses of probes (kubelet/node); their traffic never counts as activity. An
        /// IPv4 address also matches its IPv4-mapped IPv6 form (the maps store both as the latter).
        public var probeSources: [IPAddress]
        /// When true, traffic from 127.0.0.0/8 and ::1 (also IPv4-mapped) never counts.
        public var ignoreLoopback: Bool
        /// The cgroup v2 mount whose root gets the node's sockops link; nil finds it in
        /// /proc/self/mountinfo. kubelet's connections are seen only if kubelet runs in this cgroup
        /// or below it.
        public var cgroupRoot: FilePath?
        /// Whether connections that kubelet opens never count as activity (node setting
        /// `learn-probe-sources`).
        public var identifyKubelet: Bool
        /// The process names that are kubelet (1-15 bytes each, at most ``maxKubeletProcessNames``).
        public var kubeletProcessNames: [String]
        /// The network namespace kubelet's connections come from: the node's. nil = the one of the
        /// calling thread (the shim runs in the node's).
        public var kubeletNamespace: FilePath?
        /// Where the node's sockops object is pinned and shared (a bpf filesystem; elsewhere the
        /// object is private to this redirector). Pods with the same node namespace, cgroup root
        /// and kubelet names share one object per root.
        public var nodePinRoot: FilePath

        /// Creates options; by default only kubelet's connections are filtered.
        public init(
            probeSources: [IPAddress] = [],
            ignoreLoopback: Bool = false,
            cgroupRoot: FilePath? = nil,
            identifyKubelet: Bool = true,
            kubeletProcessNames: [String] = PodRedirector.kubeletProcessNames,
            kubeletNamespace: FilePath? = nil,
            nodePinRoot: FilePath = PodRedirector.defaultNodePinRoot
        ) {
            self.probeSources = probeSources
            self.ignoreLoopback = ignoreLoopback
            self.cgroupRoot = cgroupRoot
            self.identifyKubelet = identifyKubelet
            self.kubeletProcessNames = kubeletProcessNames
            self.kubeletNamespace = kubeletNamespace
            self.nodePinRoot = nodePinRoot
        }
    }

    struct Handles: Sendable {
        var maps: Maps
        /// Links by pin file name (link_sk_lookup, link_tcx_<ifindex>).
        var links: [(String, SharedDescriptor)]
        var pinDirectory: FilePath?
        /// The sk_reuseport/migrate program a handover listener's group gets (decision 0046); not
        /// linked, so held here (pinned as `prog_reuseport_migrate`).
        var reuseportMigrate: SharedDescriptor
        /// The pod's network namespace cookie (its key in the node object).
        var podCookie: UInt64
        /// The node object the pod is registered in; nil for a reopened pod whose node is gone.
        var node: NodeSockops.Membership?
    }

    private let handles: Mutex<Handles?>

    /// Where ``init(netnsPath:options:programs:)`` spent its time, for logs and benchmarks.
    public struct SetupTimings: Sendable {
        /// Loading the pod object (zero when programs loaded ahead were given).
        public var load: Duration = .zero
        /// Attaching the tcx and sk_lookup links and writing the pod's settings.
        public var attach: Duration = .zero
        /// Opening (or creating, attaching and pinning) the node object and registering the pod.
        public var nodeRegistration: Duration = .zero
    }

    /// Where the setup's time went (zero for a redirector reopened from pins).
    public let setupTimings: SetupTimings
    /// The thread that reads the wake events, started by the first subscriber (decision 0045).
    let eventWatcher = Mutex<PodEventWatcher?>(nil)

    /// Loads the programs, attaches them to the pod network namespace at `netnsPath` (e.g.
    /// `/var/run/netns/NAME` or `/proc/PID/ns/net`), registers the pod with the node's sockops
    /// object (created and attached to the cgroup v2 root by the node's first pod), and applies
    /// `options`.
    /// Nothing is redirected or tracked until `trackPort`, `registerListener` and `setRedirect`.
    /// - Throws: `BPFError.notSupported` for a kernel without sk_lookup (5.9), tcx (6.6),
    ///   bpf_get_netns_cookie or bpf_get_current_task_btf in sockops; `.loadFailed` with the
    ///   verifier log; `.system` naming the failed call and path; `.invalidArgument` for a bad
    ///   kubelet process name.
    /// - Parameter programs: the programs and maps loaded ahead (``Programs/load()``), used
    ///   instead of loading them here; they belong to this redirector afterwards.
    public init(netnsPath: FilePath, options: Options = Options(), programs: Programs? = nil) throws(BPFError) {
        var timings = SetupTimings()
        let setupStart = ContinuousClock.now
        let names = try Self.kubeletNameKeys(options.kubeletProcessNames)
        let netns = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in
            try OwnedDescriptor.open(netnsPath, O_RDONLY)
        }
        let nodeCookie = try Self.networkNamespaceCookie(options.kubeletNamespace)
        let loaded: EmbeddedObject.Loaded
        if let programs { loaded = programs.loaded } else { loaded = try EmbeddedObject.load() }
        let loadedAt = ContinuousClock.now
        timings.load = programs == nil ? setupStart.duration(to: loadedAt) : .zero
        var links: [(String, SharedDescriptor)] = []

        // Interfaces and the netns cookie are only visible from inside the namespace.
        let attached: (links: [(String, SharedDescriptor)], cookie: UInt64)
        do throws(BPFError) {
            attached = try Self.attachActivity(in: NetworkNamespace(path: netnsPath), program: loaded.tcIngress)
        } catch {
            if case .system(let failure) = error, failure.errno == .invalidArgument {
                throw .notSupported(feature: "tcx", minimumKernel: "6.6")
            }
            throw error
        }
        links += attached.links
        let cookie = attached.cookie

        let maps = loaded.maps
        try Self.writeConfig(
            maps.config,
            Config(
                netnsCookie: cookie,
                ignoreLoopback: options.ignoreLoopback,
                identifyKubelet: options.identifyKubelet
            )
        )
        try Self.replaceProbeSources(maps.probeSources, with: options.probeSources)

        do throws(BPFError) {
            let fd = try libbpfCall("bpf_link_create(sk_lookup)", netnsPath.string) {
                bpf_link_create(loaded.skLookup.rawValue, netns.rawValue, BPF_SK_LOOKUP, nil)
            }
            links.append(("link_sk_lookup", SharedDescriptor(OwnedDescriptor(adopting: fd))))
        } catch {
            if !FeatureProbe.skLookup { throw .notSupported(feature: "sk_lookup", minimumKernel: "5.9") }
            throw error
        }

        let cgroupRoot: FilePath
        if let configured = options.cgroupRoot {
            cgroupRoot = configured
        } else {
            cgroupRoot = try Self.findCgroup2Root()
        }
        // Last: from here on the node program sees the pod, and nothing below can fail.
        let registrationStart = ContinuousClock.now
        timings.attach = loadedAt.duration(to: registrationStart)
        let node = try NodeSockops.register(
            NodeSockops.Pod(
                cookie: cookie,
                activity: maps.activity,
                config: Self.configValue(
                    Config(
                        netnsCookie: cookie,
                        ignoreLoopback: options.ignoreLoopback,
                        identifyKubelet: options.identifyKubelet
                    )
                ),
                probeSources: try Self.keys16(maps.probeSources).map { $0.v4Mapped.bytes }
            ),
            settings: NodeSockops.Settings(
                nodeCookie: nodeCookie,
                cgroupRoot: cgroupRoot,
                kubeletNames: names,
                pinRoot: options.nodePinRoot
            ),
            preloaded: programs?.node
        )
        var zero: UInt32 = 0
        var kubeletMap = UInt32(bitPattern: node.maps.kubeletConnections.rawValue)
        let rc = bpf_map_update_elem(maps.nodeKubeletConnections.rawValue, &zero, &kubeletMap, UInt64(BPF_ANY))
        if rc < 0 {
            node.unregister(podCookie: cookie)
            try libbpfCall("bpf_map_update_elem", "zp_node_kubelet_conns") { rc }
        }
        timings.nodeRegistration = registrationStart.duration(to: .now)
        setupTimings = timings
        handles = Mutex(
            Handles(
                maps: maps,
                links: links,
                pinDirectory: nil,
                reuseportMigrate: loaded.reuseportMigrate,
                podCookie: cookie,
                node: node.membership
            )
        )
    }

    /// One copy of the programs and maps, loaded and verified but attached nowhere: the
    /// expensive part of ``init(netnsPath:options:programs:)`` (tens of milliseconds of verifier
    /// time), so that a shim can do it before a pod's container is created (decision 0037). One
    /// copy serves one redirector; dropping it unused frees the kernel objects.
    public struct Programs: Sendable {
        let loaded: EmbeddedObject.Loaded
        /// The node object, loaded too when none of this build was pinned under the node pin root
        /// (the first pod of a node then only attaches and pins it; decision 0052).
        let node: NodeSockops.Loaded?

        /// Loads the embedded object (bpf_object__load: every program passes the verifier), and the
        /// node object when no node object of this build is pinned under `nodePinRoot`.
        /// - Throws: the errors of ``PodRedirector/init(netnsPath:options:programs:)``'s load:
        ///   `BPFError.notSupported` or `.loadFailed` with the verifier log.
        public static func load(nodePinRoot: FilePath = PodRedirector.defaultNodePinRoot) throws(BPFError) -> Programs {
            let pod = try EmbeddedObject.load()
            let node = NodeSockops.isPinned(under: nodePinRoot) ? nil : try NodeSockops.loadObject()
            return Programs(loaded: pod, node: node)
        }

        /// Kernel IDs of the maps of this copy, for checks.
        func mapIDs() throws(BPFError) -> [UInt32] {
            var ids: [UInt32] = []
            for (_, fd) in loaded.maps.byPinName { ids.append(try PodRedirector.kernelID(fd)) }
            return ids
        }
    }

    private init(handles: Handles) {
        self.handles = Mutex(handles)
        self.setupTimings = SetupTimings()
    }

    deinit { close() }

    /// On a thread inside the pod namespace: attaches `program` (hold and activity, decision 0045)
    /// as a tcx ingress link to every interface (if_nameindex, bpf_link_create) and reads the
    /// namespace's cookie (SO_NETNS_COOKIE).
    /// - Throws: `BPFError.system` naming the call; no link is left attached.
    private static func attachActivity(
        in namespace: NetworkNamespace,
        program: SharedDescriptor
    ) throws(BPFError) -> (links: [(String, SharedDescriptor)], cookie: UInt64) {
        let prog = program.rawValue
        let subject = namespace.path.string
        let attached = try bpfSystem { () throws(SystemError) in
            try namespace.perform { () -> Result<(links: [(String, SharedDescriptor)], cookie: UInt64), BPFError> in
                Result { () throws(BPFError) -> (links: [(String, SharedDescriptor)], cookie: UInt64) in
                    let cookie = try bpfSystem { () throws(SystemError) -> UInt64 in
                        let probe = try OwnedDescriptor.socket(
                            domain: AF_INET,
                            type: CInt(SOCK_DGRAM.rawValue),
                            subject: subject
                        )
                        var cookie: UInt64 = 0
                        var length = socklen_t(MemoryLayout<UInt64>.size)
                        try systemCall("getsockopt(SO_NETNS_COOKIE)", subject) {
                            getsockopt(probe.rawValue, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &length)
                        }
                        return cookie
                    }
                    let names = try bpfSystem { () throws(SystemError) in
                        try systemCallReturningPointer("if_nameindex", subject) { if_nameindex() }
                    }
                    defer { if_freenameindex(names) }
                    var links: [(String, SharedDescriptor)] = []
                    var entry = names
                    while entry.pointee.if_index != 0 {
                        let index = entry.pointee.if_index
                        let fd = try libbpfCall("bpf_link_create(tcx)", "\(subject) ifindex \(index)") {
                            bpf_link_create(
                                prog,
                                CInt(index),
                                bpf_attach_type(rawValue: UInt32(CZPBPF_TCX_INGRESS)),
                                nil
                            )
                        }
                        links.append(("link_tcx_\(index)", SharedDescriptor(OwnedDescriptor(adopting: fd))))
                        entry += 1
                    }
                    return (links, cookie)
                }
            }
        }
        return try attached.get()
    }

    /// The cookie (SO_NETNS_COOKIE) of the network namespace at `path`, or of the calling thread's
    /// when nil.
    private static func networkNamespaceCookie(_ path: FilePath?) throws(BPFError) -> UInt64 {
        let subject = path?.string ?? "the calling thread's network namespace"
        func cookie() -> Result<UInt64, SystemError> {
            Result { () throws(SystemError) -> UInt64 in
                let probe = try OwnedDescriptor.socket(
                    domain: AF_INET,
                    type: CInt(SOCK_DGRAM.rawValue),
                    subject: subject
                )
                var cookie: UInt64 = 0
                var length = socklen_t(MemoryLayout<UInt64>.size)
                try systemCall("getsockopt(SO_NETNS_COOKIE)", subject) {
                    getsockopt(probe.rawValue, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &length)
                }
                return cookie
            }
        }
        return try bpfSystem { () throws(SystemError) -> UInt64 in
            guard let path else { return try cookie().get() }
            return try NetworkNamespace(path: path).perform { cookie() }.get()
        }
    }

    /// The `zp_kubelet_names` keys: each name NUL-padded to 16 bytes.
    /// - Throws: `.invalidArgument` for an empty name, one longer than 15 bytes or with a NUL, or
    ///   more than ``maxKubeletProcessNames`` names.
    static func kubeletNameKeys(_ names: [String]) throws(BPFError) -> [[UInt8]] {
        guard names.count <= maxKubeletProcessNames else {
            throw .invalidArgument(
                name: "kubelet process names",
                value: "\(names.count) names",
                reason: "at most \(maxKubeletProcessNames) are supported"
            )
        }
        var keys: [[UInt8]] = []
        for name in names {
            let bytes = Array(name.utf8)
            guard !bytes.isEmpty, bytes.count <= 15, !bytes.contains(0) else {
                throw .invalidArgument(
                    name: "kubelet process name",
                    value: name,
                    reason: "a process name (comm) has 1 to 15 bytes and no NUL"
                )
            }
            keys.append(bytes + [UInt8](repeating: 0, count: 16 - bytes.count))
        }
        return keys
    }

    // MARK: ports

    /// Starts tracking activity (timestamp and open connections) of TCP `port`; a port already
    /// tracked keeps its figures.
    /// - Throws: `BPFError.tooManyPorts` when `maxPorts` ports are tracked.
    public func trackPort(_ port: UInt16) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var key = UInt32(port)
            var value: (UInt64, UInt64) = (0, 0)
            try Self.update(h.maps.activity, &key, &value, flags: UInt64(BPF_NOEXIST), port: port)
        }
    }

    /// Stops tracking `port` and forgets its figures.
    public func untrackPort(_ port: UInt16) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in try Self.delete(h.maps.activity, UInt32(port), "zp_activity") }
    }

    /// Registers the activator's listening socket for `port` (SOCKHASH update). The socket must be
    /// a TCP listener created in the pod network namespace (see `makeListener`); a dual-stack IPv6
    /// socket takes IPv4 and IPv6 connections, an IPv4 one only IPv4. The kernel drops the entry
    /// when the socket closes. The map keeps its own reference; the caller keeps `socket`.
    /// - Throws: `BPFError.tooManyPorts` when `maxPorts` ports have sockets.
    public func registerListener(port: UInt16, socket: borrowing OwnedDescriptor) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var key = UInt32(port)
            var value = UInt64(socket.rawValue)
            try Self.update(h.maps.listeners, &key, &value, flags: UInt64(BPF_ANY), port: port)
        }
    }

    /// Removes the socket registered for `port`, if any.
    public func unregisterListener(port: UInt16) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in try Self.delete(h.maps.listeners, UInt32(port), "zp_listeners") }
    }

    /// Whether a listener is registered for `port` (its entry disappears when the socket closes).
    public func hasListener(port: UInt16) throws(BPFError) -> Bool {
        try withHandles { (h) throws(BPFError) in
            var cookie: UInt64 = 0
            return try Self.lookup(h.maps.listeners, UInt32(port), &cookie, "zp_listeners")
        }
    }

    /// Switches the redirect of new TCP connections for `port` on or off. While on and a listener
    /// is registered, every new connection to the port (any local address, IPv4 and IPv6, from
    /// outside or over loopback) goes to that listener; when off, connections reach the app
    /// directly. Established connections are never moved.
    /// - Throws: `BPFError.tooManyPorts` when switching on a port beyond `maxPorts`.
    public func setRedirect(port: UInt16, enabled: Bool) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var key = UInt32(port)
            if enabled {
                var on: UInt32 = 1
                try Self.update(h.maps.redirectOn, &key, &on, flags: UInt64(BPF_ANY), port: port)
            } else {
                try Self.delete(h.maps.redirectOn, key, "zp_redirect_on")
            }
        }
    }

    /// Whether the redirect for `port` is on.
    public func isRedirectEnabled(port: UInt16) throws(BPFError) -> Bool {
        try withHandles { (h) throws(BPFError) in
            var on: UInt32 = 0
            return try Self.lookup(h.maps.redirectOn, UInt32(port), &on, "zp_redirect_on") && on != 0
        }
    }

    /// The activity figures of a tracked `port`; nil if the port is not tracked.
    public func activity(port: UInt16) throws(BPFError) -> PortActivity? {
        try withHandles { (h) throws(BPFError) in
            var value: (UInt64, UInt64) = (0, 0)
            guard try Self.lookup(h.maps.activity, UInt32(port), &value, "zp_activity") else { return nil }
            return PortActivity(
                lastActivity: value.0 == 0 ? nil : .nanoseconds(Int64(value.0)),
                openConnections: Int(value.1)
            )
        }
    }

    /// The tracked ports, ascending (e.g. for a restarted shim after `open(pinnedAt:)`).
    public func trackedPorts() throws(BPFError) -> [UInt16] {
        try withHandles { (h) throws(BPFError) in try Self.portKeys(h.maps.activity, "zp_activity") }
    }

    /// The ports whose redirect is on, ascending.
    public func redirectedPorts() throws(BPFError) -> [UInt16] {
        try withHandles { (h) throws(BPFError) in try Self.portKeys(h.maps.redirectOn, "zp_redirect_on") }
    }

    // MARK: filters

    /// Replaces the probe source addresses (at most `maxProbeSources`; an IPv4 address and its
    /// IPv4-mapped form count once).
    public func setProbeSources(_ sources: [IPAddress]) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            try Self.replaceProbeSources(h.maps.probeSources, with: sources)
            if let membership = h.node {
                try NodeSockops.open(membership).replaceProbeSources(
                    cookie: h.podCookie,
                    with: try Self.keys16(h.maps.probeSources).map { $0.v4Mapped.bytes }
                )
            }
        }
    }

    /// The current probe source addresses: IPv4 (and IPv4-mapped) addresses as `.v4`, others `.v6`.
    public func probeSources() throws(BPFError) -> Set<IPAddress> {
        try withHandles { (h) throws(BPFError) in try Self.keys16(h.maps.probeSources) }
    }

    /// Sets whether loopback sources are ignored (the node setting).
    public func setIgnoreLoopback(_ ignore: Bool) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var config = try Self.readConfig(h.maps.config)
            config.ignoreLoopback = ignore
            try Self.writeConfig(h.maps.config, config)
            if let membership = h.node {
                try NodeSockops.open(membership).writeConfig(cookie: h.podCookie, Self.configValue(config))
            }
        }
    }

    /// Sets whether kubelet's connections are recognised (and never count as activity) for this
    /// pod. The node keeps recording them either way (other pods may recognise them).
    public func setIdentifyKubelet(_ identify: Bool) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var config = try Self.readConfig(h.maps.config)
            config.identifyKubelet = identify
            try Self.writeConfig(h.maps.config, config)
            if let membership = h.node {
                try NodeSockops.open(membership).writeConfig(cookie: h.podCookie, Self.configValue(config))
            }
        }
    }

    /// The open connections kubelet made to the pod's tracked ports (of any address), as the
    /// node recorded them when kubelet connected (for diagnostics and tests; a closed connection
    /// leaves the map when its socket closes).
    public func kubeletConnections() throws(BPFError) -> [KubeletConnection] {
        try withHandles { (h) throws(BPFError) in
            guard let membership = h.node, let node = try? NodeSockops.open(membership) else { return [] }
            let ports = Set(try Self.portKeys(h.maps.activity, "zp_activity"))
            return try node.kubeletConnectionKeys().compactMap(KubeletConnection.init(key:))
                .filter { ports.contains($0.serverPort) }
        }
    }

    /// Whether the connection from `client`:`clientPort` to `server`:`serverPort` is a known
    /// probe's, as `zp_sk_lookup` decides for a handover port: its client is one of the pod's probe
    /// sources, or kubelet opened it (recorded by the node's sockops program when kubelet
    /// connected, decisions 0040 and 0052; only when the pod identifies kubelet). Used for ports
    /// that speak first, whose connections the activator forwards without looking at their content
    /// (decision 0055). One map lookup, plus opening the node's kubelet map from its pin and one
    /// lookup in it.
    /// - Throws: `BPFError` when a map cannot be read, or `.closed`.
    public func isProbeConnection(
        client: IPAddress,
        clientPort: UInt16,
        server: IPAddress,
        serverPort: UInt16
    ) throws(BPFError) -> Bool {
        try withHandles { (h) throws(BPFError) -> Bool in
            var source = client.v4Mapped.bytes
            var found: UInt32 = 0
            let rc = bpf_map_lookup_elem(h.maps.probeSources.rawValue, &source, &found)
            if rc == 0 { return true }
            if -rc != ENOENT { try libbpfCall("bpf_map_lookup_elem", "zp_probe_src[\(client)]") { rc } }
            guard try Self.readConfig(h.maps.config).identifyKubelet, let membership = h.node else { return false }
            var key = client.v4Mapped.bytes + server.v4Mapped.bytes
            withUnsafeBytes(of: clientPort) { key += $0 }
            withUnsafeBytes(of: serverPort) { key += $0 }
            key += [0, 0, 0, 0]
            return try NodeSockops.containsKubeletConnection(membership, key: key)
        }
    }

    // MARK: lifecycle

    /// Pins every map and link under `root/podID/` (directories mode 0700, files 0600), so a
    /// restarted shim can reopen them with `open(pinnedAt:)`.
    /// - Returns: the pod's pin directory.
    /// - Throws: `.invalidArgument` for a pod ID that is not a plain file name or is already pinned.
    @discardableResult
    public func pin(podID: String, root: FilePath = PodRedirector.defaultPinRoot) throws(BPFError) -> FilePath {
        try Self.validate(podID: podID)
        return try withHandles { (h) throws(BPFError) -> FilePath in
            if let existing = h.pinDirectory { return existing }
            try Self.makeDirectory(root, allowExisting: true)
            try bpfSystem { () throws(SystemError) in try systemCall("chmod", root.string) { chmod(root.string, 0o700) }
            }
            let dir = root.appending(podID)
            if Glibc.access(dir.string, F_OK) == 0 {
                throw .invalidArgument(
                    name: "pod ID",
                    value: podID,
                    reason: "\(dir) already exists; reopen it with open(pinnedAt:) or remove it"
                )
            }
            try Self.makeDirectory(dir, allowExisting: false)
            do throws(BPFError) {
                for (name, fd) in h.maps.byPinName + h.links + [("prog_reuseport_migrate", h.reuseportMigrate)] {
                    let path = dir.appending(name).string
                    try libbpfCall("bpf_obj_pin", path) { bpf_obj_pin(fd.rawValue, path) }
                    try bpfSystem { () throws(SystemError) in try systemCall("chmod", path) { chmod(path, 0o600) } }
                }
                if let membership = h.node { try NodeSockops.open(membership).setPinned(podCookie: h.podCookie, true) }
            } catch {
                Self.unpin(dir)
                throw error
            }
            h.pinDirectory = dir
            return dir
        }
    }

    /// The pin directory, if pinned.
    public var pinDirectory: FilePath? { handles.withLock { $0?.pinDirectory } }

    /// Reopens a pod pinned by `pin(podID:root:)` (bpf_obj_get on each pin), e.g. after a shim
    /// restart, with the node object it is registered in (under `nodePinRoot`). The returned
    /// object owns new references; the pins stay until `remove()`.
    /// - Throws: `.system` naming the pin that could not be opened; `.invalidArgument` when the
    ///   directory lacks one of the maps.
    public static func open(
        pinnedAt directory: FilePath,
        nodePinRoot: FilePath = PodRedirector.defaultNodePinRoot
    ) throws(BPFError) -> PodRedirector {
        var maps: [String: SharedDescriptor] = [:]
        var links: [(String, SharedDescriptor)] = []
        var programs: [String: SharedDescriptor] = [:]
        for name in try bpfSystem({ () throws(SystemError) in try Files.list(directory) }) {
            let path = directory.appending(name).string
            let fd = SharedDescriptor(
                OwnedDescriptor(adopting: try libbpfCall("bpf_obj_get", path) { bpf_obj_get(path) })
            )
            if name.hasPrefix("map_") {
                maps[name] = fd
            } else if name.hasPrefix("link_") {
                links.append((name, fd))
            } else if name.hasPrefix("prog_") {
                programs[name] = fd
            }
        }
        func map(_ name: String) throws(BPFError) -> SharedDescriptor {
            guard let fd = maps[name] else {
                throw .invalidArgument(name: "pin directory", value: directory.string, reason: "\(name) is missing")
            }
            return fd
        }
        guard let migrate = programs["prog_reuseport_migrate"] else {
            throw .invalidArgument(
                name: "pin directory",
                value: directory.string,
                reason: "prog_reuseport_migrate is missing"
            )
        }
        let config = try map("map_config")
        let cookie = try readConfig(config).netnsCookie
        let handles = Handles(
            maps: Maps(
                redirectOn: try map("map_redirect_on"),
                listeners: try map("map_listeners"),
                activity: try map("map_activity"),
                probeSources: try map("map_probe_src"),
                config: config,
                nodeKubeletConnections: try map("map_node_kubelet_conns"),
                held: try map("map_held"),
                handover: try map("map_handover"),
                events: try map("map_events"),
                handoverSockets: maps["map_handover_socks"]
            ),
            links: links.sorted { $0.0 < $1.0 },
            pinDirectory: directory,
            reuseportMigrate: migrate,
            podCookie: cookie,
            node: NodeSockops.find(podCookie: cookie, pinRoot: nodePinRoot)?.membership
        )
        return PodRedirector(handles: handles)
    }

    /// Releases this object's references. Unpinned objects are detached and freed by the kernel
    /// (and the pod leaves the node object); pinned ones stay for `open(pinnedAt:)`. Further calls
    /// throw `BPFError.closed`. Idempotent.
    public func close() {
        stopEventWatcher()
        let taken = handles.withLock { h -> Handles? in
            let current = h
            h = nil
            return current
        }
        if let taken, taken.pinDirectory == nil, let membership = taken.node {
            (try? NodeSockops.open(membership))?.unregister(podCookie: taken.podCookie)
        }
        // descriptors close here, outside the lock
    }

    /// Unpins everything (if pinned) and closes: the links detach, the maps are freed and the pod
    /// leaves the node object.
    public func remove() {
        stopEventWatcher()
        let taken = handles.withLock { h -> Handles? in
            let current = h
            h = nil
            return current
        }
        guard let taken else { return }
        if let membership = taken.node { (try? NodeSockops.open(membership))?.unregister(podCookie: taken.podCookie) }
        if let dir = taken.pinDirectory { Self.unpin(dir) }
    }

    /// Removes a pin directory left by a process that is gone, without opening its links: the pod
    /// leaves its node object (under `nodePinRoot`), its links detach and its maps are freed once
    /// no process holds them.
    public static func removePinned(at directory: FilePath, nodePinRoot: FilePath = PodRedirector.defaultNodePinRoot) {
        let path = directory.appending("map_config").string
        let fd = bpf_obj_get(path)
        if fd >= 0 {
            let config = SharedDescriptor(OwnedDescriptor(adopting: fd))
            if let cookie = try? readConfig(config).netnsCookie {
                NodeSockops.find(podCookie: cookie, pinRoot: nodePinRoot)?.unregister(podCookie: cookie)
            }
        }
        unpin(directory)
    }

    /// Creates a TCP listening socket inside the network namespace at `netnsPath`, bound to `port`
    /// (0: any free port) on all addresses, dual-stack (IPv6 with IPV6_V6ONLY off), for the
    /// activator. The caller owns the returned descriptor.
    public static func makeListener(
        inNamespaceAt netnsPath: FilePath,
        port: UInt16 = 0,
        backlog: Int32 = 1024
    ) throws(BPFError) -> OwnedDescriptor {
        let socket = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in
            try NetworkNamespace(path: netnsPath).makeSocket(domain: AF_INET6, type: CInt(SOCK_STREAM.rawValue))
        }
        let fd = socket.rawValue
        try bpfSystem { () throws(SystemError) in
            var off: CInt = 0
            var on: CInt = 1
            try systemCall("setsockopt(IPV6_V6ONLY)", netnsPath.string) {
                setsockopt(fd, CInt(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<CInt>.size))
            }
            try systemCall("setsockopt(SO_REUSEADDR)", netnsPath.string) {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
            }
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            try systemCall("bind", "[::]:\(port) in \(netnsPath)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                    }
                }
            }
            try systemCall("listen", "[::]:\(port) in \(netnsPath)") { listen(fd, backlog) }
        }
        return socket
    }

    // MARK: internals

    /// Kernel IDs of the maps and links this object holds (bpf_obj_get_info_by_fd), for checks.
    func kernelObjectIDs() throws(BPFError) -> (maps: [UInt32], links: [UInt32]) {
        try withHandles { (h) throws(BPFError) in
            var maps: [UInt32] = []
            for (_, fd) in h.maps.byPinName { maps.append(try Self.kernelID(fd)) }
            var links: [UInt32] = []
            for (_, fd) in h.links { links.append(try Self.kernelID(fd)) }
            return (maps, links)
        }
    }

    /// The kernel ID of a map or link (bpf_obj_get_info_by_fd), for checks.
    static func kernelID(_ fd: SharedDescriptor) throws(BPFError) -> UInt32 {
        // bpf_map_info and bpf_link_info both start with (type, id); 256 bytes cover either.
        var info = [UInt32](repeating: 0, count: 64)
        var length = UInt32(info.count * 4)
        try libbpfCall("bpf_obj_get_info_by_fd", "\(fd)") { bpf_obj_get_info_by_fd(fd.rawValue, &info, &length) }
        return info[1]
    }

    /// Names of the pinned links (`link_sk_lookup`, `link_tcx_<ifindex>`).
    func linkNames() throws(BPFError) -> [String] {
        try withHandles { (h) throws(BPFError) in h.links.map(\.0) }
    }

    func withHandles<R>(_ body: (inout Handles) throws(BPFError) -> R) throws(BPFError) -> R {
        try handles.withLock { (h) throws(BPFError) -> R in
            guard var current = h else { throw .closed }
            defer { h = current }
            return try body(&current)
        }
    }

    /// bpf_map_update_elem on a per-port map; a full map becomes `.tooManyPorts`, an existing
    /// entry under BPF_NOEXIST is kept.
    private static func update<K: BitwiseCopyable, V: BitwiseCopyable>(
        _ map: SharedDescriptor,
        _ key: inout K,
        _ value: inout V,
        flags: UInt64,
        port: UInt16
    ) throws(BPFError) {
        let rc = bpf_map_update_elem(map.rawValue, &key, &value, flags)
        if rc >= 0 { return }
        switch -rc {
        case E2BIG: throw .tooManyPorts(port: port, limit: maxPorts)
        case EEXIST: return
        default: try libbpfCall("bpf_map_update_elem", "port \(port)") { rc }
        }
    }

    private static func delete(_ map: SharedDescriptor, _ key: UInt32, _ name: String) throws(BPFError) {
        var key = key
        let rc = bpf_map_delete_elem(map.rawValue, &key)
        if rc >= 0 || -rc == ENOENT { return }
        try libbpfCall("bpf_map_delete_elem", "\(name)[\(key)]") { rc }
    }

    private static func lookup<V: BitwiseCopyable>(
        _ map: SharedDescriptor,
        _ key: UInt32,
        _ value: inout V,
        _ name: String
    ) throws(BPFError) -> Bool {
        var key = key
        let rc = bpf_map_lookup_elem(map.rawValue, &key, &value)
        if rc >= 0 { return true }
        if -rc == ENOENT { return false }
        try libbpfCall("bpf_map_lookup_elem", "\(name)[\(key)]") { rc }
        return false
    }

    /// `struct zp_config` of bpf/zpbpf_shared.h.
    private struct Config {
        var netnsCookie: UInt64
        var ignoreLoopback: Bool
        var identifyKubelet: Bool
    }

    /// `config` as `struct zp_config`'s fields.
    private static func configValue(_ config: Config) -> (UInt64, UInt32, UInt32) {
        (config.netnsCookie, config.ignoreLoopback ? 1 : 0, config.identifyKubelet ? 1 : 0)
    }

    private static func writeConfig(_ map: SharedDescriptor, _ config: Config) throws(BPFError) {
        var key: UInt32 = 0
        var value = configValue(config)
        try libbpfCall("bpf_map_update_elem", "zp_config") {
            bpf_map_update_elem(map.rawValue, &key, &value, UInt64(BPF_ANY))
        }
    }

    private static func readConfig(_ map: SharedDescriptor) throws(BPFError) -> Config {
        var key: UInt32 = 0
        var value: (UInt64, UInt32, UInt32) = (0, 0, 0)
        try libbpfCall("bpf_map_lookup_elem", "zp_config") { bpf_map_lookup_elem(map.rawValue, &key, &value) }
        return Config(netnsCookie: value.0, ignoreLoopback: value.1 != 0, identifyKubelet: value.2 != 0)
    }

    /// Every key of `map`, each `size` bytes.
    static func keys(_ map: SharedDescriptor, size: Int, _ name: String) throws(BPFError) -> [[UInt8]] {
        var result: [[UInt8]] = []
        var key = [UInt8](repeating: 0, count: size)
        var next = [UInt8](repeating: 0, count: size)
        var first = true
        while true {
            let rc =
                first ? bpf_map_get_next_key(map.rawValue, nil, &next) : bpf_map_get_next_key(map.rawValue, &key, &next)
            if -rc == ENOENT { break }
            try libbpfCall("bpf_map_get_next_key", name) { rc }
            first = false
            key = next
            result.append(next)
        }
        return result
    }

    static func portKeys(_ map: SharedDescriptor, _ name: String) throws(BPFError) -> [UInt16] {
        var ports: [UInt16] = []
        var key: UInt32 = 0
        var next: UInt32 = 0
        var first = true
        while true {
            let rc =
                first ? bpf_map_get_next_key(map.rawValue, nil, &next) : bpf_map_get_next_key(map.rawValue, &key, &next)
            if -rc == ENOENT { break }
            try libbpfCall("bpf_map_get_next_key", name) { rc }
            first = false
            key = next
            ports.append(UInt16(truncatingIfNeeded: next))
        }
        return ports.sorted()
    }

    private static func keys16(_ map: SharedDescriptor) throws(BPFError) -> Set<IPAddress> {
        var result = Set<IPAddress>()
        var key = [UInt8](repeating: 0, count: 16)
        var next = [UInt8](repeating: 0, count: 16)
        var first = true
        while true {
            let rc =
                first ? bpf_map_get_next_key(map.rawValue, nil, &next) : bpf_map_get_next_key(map.rawValue, &key, &next)
            if -rc == ENOENT { break }
            try libbpfCall("bpf_map_get_next_key", "zp_probe_src") { rc }
            first = false
            key = next
            if let address = IPAddress(bytes: next) { result.insert(address.unmappedV4 ?? address) }
        }
        return result
    }

    private static func replaceProbeSources(_ map: SharedDescriptor, with sources: [IPAddress]) throws(BPFError) {
        let wanted = Set(sources.map { $0.unmappedV4 ?? $0 })
        guard wanted.count <= maxProbeSources else {
            throw .invalidArgument(
                name: "probe sources",
                value: "\(wanted.count) addresses",
                reason: "at most \(maxProbeSources) are supported"
            )
        }
        let current = try keys16(map)
        for stale in current.subtracting(wanted) {
            var key = stale.v4Mapped.bytes
            let rc = bpf_map_delete_elem(map.rawValue, &key)
            if rc < 0 && -rc != ENOENT { try libbpfCall("bpf_map_delete_elem", "zp_probe_src[\(stale)]") { rc } }
        }
        for address in wanted.subtracting(current) {
            var key = address.v4Mapped.bytes
            var one: UInt32 = 1
            try libbpfCall("bpf_map_update_elem", "zp_probe_src[\(address)]") {
                bpf_map_update_elem(map.rawValue, &key, &one, UInt64(BPF_ANY))
            }
        }
    }

    static func validate(podID: String) throws(BPFError) {
        let allowed = podID.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                || c == 0x2d || c == 0x2e || c == 0x5f
        }
        guard !podID.isEmpty, podID.utf8.count <= 200, allowed, podID != ".", podID != ".." else {
            throw .invalidArgument(
                name: "pod ID",
                value: podID,
                reason: "must be 1-200 characters of A-Z a-z 0-9 . _ - and not . or .."
            )
        }
    }

    private static func makeDirectory(_ path: FilePath, allowExisting: Bool) throws(BPFError) {
        if mkdir(path.string, 0o700) == 0 { return }
        let e = Glibc.errno
        if e == EEXIST && allowExisting { return }
        throw .system(SystemError(call: "mkdir", subject: path.string, errno: Errno(rawValue: e)))
    }

    static func unpin(_ directory: FilePath) {
        guard let names = try? Files.list(directory) else { return }
        for name in names { _ = unlink(directory.appending(name).string) }
        _ = rmdir(directory.string)
    }

    /// The first cgroup2 mount point in /proc/self/mountinfo.
    static func findCgroup2Root() throws(BPFError) -> FilePath {
        guard let mountPoint = try bpfSystem({ () throws(SystemError) in try MountInfo.cgroup2MountPoint() }) else {
            throw .notSupported(feature: "cgroup v2 mount (for sockops)", minimumKernel: "4.13")
        }
        return FilePath(mountPoint)
    }
}
