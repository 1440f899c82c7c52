import CZPBPF
import Glibc
import SystemPackage
import ZPSystem

/// The node object's maps (see bpf/zpbpf_node.bpf.c for their layouts).
struct NodeMaps: Sendable {
    let config: SharedDescriptor
    let kubeletNames: SharedDescriptor
    /// kubelet's open connections (LRU hash, zp_conn → connect time), node-wide.
    let kubeletConnections: SharedDescriptor
    /// Pod netns cookie → the pod's zp_activity / zp_probe_src / zp_config (hash of maps).
    let podActivity: SharedDescriptor
    let podProbeSources: SharedDescriptor
    let podConfig: SharedDescriptor
    /// Pod netns cookie → who registered it (pid, pinned, start time).
    let podOwner: SharedDescriptor

    /// Pin file names, in bpffs, for each map.
    var byPinName: [(String, SharedDescriptor)] {
        [
            ("map_node_config", config), ("map_kubelet_names", kubeletNames), ("map_kubelet_conns", kubeletConnections),
            ("map_pod_activity", podActivity), ("map_pod_probe_src", podProbeSources), ("map_pod_config", podConfig),
            ("map_pod_owner", podOwner),
        ]
    }
}

/// The node-wide sockops program and its maps (decision 0052): one per node, shared by the pod
/// redirectors of every process (every shim) through pins under ``PodRedirector/defaultNodePinRoot``,
/// one directory per node setting (node network namespace, cgroup v2 root, kubelet names, object
/// version). A cgroup takes at most 64 programs per attach type, so a sockops program per pod on
/// the cgroup v2 root stopped the 65th pod with E2BIG; this one program serves every pod.
///
/// Each pod registers its maps under its netns cookie; the last pod to leave removes the pins,
/// which detaches the program. Registration, removal and the cleanup of pods whose process died
/// (SIGKILL) run under an exclusive flock on the pin root, so concurrent shims never see a half
/// made directory. Without a bpf filesystem at the pin root's parent, the object is private to
/// the one redirector (held by this instance's link; the 64-pod limit then applies again).
final class NodeSockops: Sendable {
    /// What decides which node object a pod uses.
    struct Settings: Sendable {
        /// The network namespace kubelet's connections are recognised in (the node's).
        var nodeCookie: UInt64
        /// The cgroup v2 mount whose root gets the sockops link.
        var cgroupRoot: FilePath
        /// zp_kubelet_names keys (16 bytes each).
        var kubeletNames: [[UInt8]]
        /// Where node objects are pinned (one directory per settings).
        var pinRoot: FilePath

        /// The node object's directory name: `n-<object hash>-<settings hash>`.
        var directoryName: String {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a 64
            func mix(_ bytes: some Sequence<UInt8>) {
                for byte in bytes {
                    hash ^= UInt64(byte)
                    hash = hash &* 0x100_0000_01b3
                }
                hash ^= 0xff
                hash = hash &* 0x100_0000_01b3
            }
            mix(String(nodeCookie).utf8)
            mix(cgroupRoot.string.utf8)
            for name in kubeletNames.sorted(by: { $0.lexicographicallyPrecedes($1) }) { mix(name) }
            let hex = String(hash, radix: 16)
            return "n-\(NodeSockops.objectSHA256.prefix(12))-\(String(repeating: "0", count: 16 - hex.count))\(hex)"
        }
    }

    /// SHA-256 (hex) of the sources the embedded node object was compiled from.
    static var sourceSHA256: String { String(cString: czpbpf_node_source_sha256()) }
    /// SHA-256 (hex) of the embedded node object's bytes.
    static var objectSHA256: String { String(cString: czpbpf_node_embedded_object_sha256()) }
    /// The embedded node object's bytes (a copy).
    static var bytes: [UInt8] {
        Array(UnsafeBufferPointer(start: czpbpf_node_embedded_object(), count: Int(czpbpf_node_object_len)))
    }

    let maps: NodeMaps
    /// The pin directory; nil for a private object.
    let directory: FilePath?
    /// The sockops link of a private object (a pinned one is held by its pin).
    private let link: SharedDescriptor?

    private init(maps: NodeMaps, directory: FilePath?, link: SharedDescriptor?) {
        self.maps = maps
        self.directory = directory
        self.link = link
    }

    /// What a pod keeps of its node object: the pin directory (the maps are reopened when needed,
    /// so a pod's process holds none of the node's descriptors and is not charged for its maps), or
    /// a private object itself.
    enum Membership: Sendable {
        case pinned(FilePath)
        case unshared(NodeSockops)
    }

    /// This object as a pod keeps it.
    var membership: Membership { directory.map { .pinned($0) } ?? .unshared(self) }

    /// The node object of `membership`, opened from its pins when pinned.
    /// - Throws: `BPFError` when the pins are gone (the node object was removed).
    static func open(_ membership: Membership) throws(BPFError) -> NodeSockops {
        switch membership {
        case .pinned(let directory): return try open(pinnedAt: directory)
        case .unshared(let node): return node
        }
    }

    /// The node object loaded and verified but attached nowhere (the expensive part of creating
    /// it: the verifier and the CO-RE relocation against the kernel's BTF), so that a shim can do
    /// it before Create (decision 0037) when the node has no object yet. Dropping it unused frees it.
    struct Loaded: Sendable {
        let program: SharedDescriptor
        let maps: NodeMaps
    }

    /// Loads the embedded node object.
    /// - Throws: `BPFError.notSupported` or `.loadFailed` with the verifier log.
    static func loadObject() throws(BPFError) -> Loaded {
        try EmbeddedObject.withLoadedObject(
            name: "zpbpf_node",
            open: { czpbpf_open_embedded_node() }
        ) { (object) throws(BPFError) -> Loaded in
            Loaded(
                program: try EmbeddedObject.program(object, "zp_sockops"),
                maps: NodeMaps(
                    config: try EmbeddedObject.map(object, "zp_node_config"),
                    kubeletNames: try EmbeddedObject.map(object, "zp_kubelet_names"),
                    kubeletConnections: try EmbeddedObject.map(object, "zp_kubelet_conns"),
                    podActivity: try EmbeddedObject.map(object, "zp_pod_activity"),
                    podProbeSources: try EmbeddedObject.map(object, "zp_pod_probe_src"),
                    podConfig: try EmbeddedObject.map(object, "zp_pod_config"),
                    podOwner: try EmbeddedObject.map(object, "zp_pod_owner")
                )
            )
        }
    }

    /// Whether a node object of this build is pinned under `root` (for any settings): then a pod
    /// of the usual settings only registers, and loading one ahead is not needed.
    static func isPinned(under root: FilePath) -> Bool {
        let prefix = "n-\(objectSHA256.prefix(12))-"
        return ((try? Files.list(root)) ?? []).contains { $0.hasPrefix(prefix) }
    }

    // MARK: registration

    /// What the node program needs of one pod: its activity map (an inner map), and copies of its
    /// settings (`struct zp_config`) and probe sources (16-byte `struct zp_addr` keys).
    struct Pod {
        var cookie: UInt64
        var activity: SharedDescriptor
        var config: (UInt64, UInt32, UInt32)
        var probeSources: [[UInt8]]
    }

    /// Opens the node object of `settings` (creating, attaching and pinning it if there is none)
    /// and registers `pod` in it.
    /// - Throws: `BPFError` from loading or attaching the node object (E2BIG when the cgroup root
    ///   already has 64 sockops programs of other owners) or from the registration.
    /// - Parameter preloaded: the node object loaded ahead, used if one has to be created.
    static func register(_ pod: Pod, settings: Settings, preloaded: Loaded? = nil) throws(BPFError) -> NodeSockops {
        let root = settings.pinRoot
        let parent = root.removingLastComponent()
        guard czpbpf_is_bpffs(parent.string) == 1 || czpbpf_is_bpffs(root.string) == 1 else {
            let node = try create(settings: settings, directory: nil, preloaded: preloaded)
            try node.put(pod)
            return node
        }
        return try withLock(root) { () throws(BPFError) -> NodeSockops in
            let name = settings.directoryName
            collectGarbage(root: root, except: name)
            let directory = root.appending(name)
            var node: NodeSockops
            if Glibc.access(directory.string, F_OK) == 0, let opened = try? open(pinnedAt: directory) {
                node = opened
            } else {
                unpin(directory)  // a partial directory of a process that died while making it
                node = try create(settings: settings, directory: directory, preloaded: preloaded)
            }
            do throws(BPFError) {
                try node.put(pod)
            } catch {
                // A full node (ZP_MAX_PODS): drop the pods of dead processes and try once more.
                node.removeDeadPods()
                try node.put(pod)
            }
            return node
        }
    }

    /// Removes the pod registered under `cookie` and the pods of processes that died without
    /// leaving (off the Create path: this runs when a pod goes); the last pod of a pinned node
    /// removes the pins (the program detaches once no process holds it).
    func unregister(podCookie cookie: UInt64) {
        guard let directory else {
            remove(cookie)
            return
        }
        _ = try? Self.withLock(directory.removingLastComponent()) { () throws(BPFError) in
            remove(cookie)
            removeDeadPods()
            if isEmpty { Self.unpin(directory) }
        }
    }

    /// Marks the pod under `cookie` as pinned (it outlives its process and is never collected as
    /// dead) or not.
    func setPinned(podCookie cookie: UInt64, _ pinned: Bool) throws(BPFError) {
        var key = cookie
        var owner = Owner(pid: 0, pinned: 0, startTicks: 0)
        try libbpfCall("bpf_map_lookup_elem", "zp_pod_owner[\(cookie)]") {
            bpf_map_lookup_elem(maps.podOwner.rawValue, &key, &owner)
        }
        owner.pinned = pinned ? 1 : 0
        try libbpfCall("bpf_map_update_elem", "zp_pod_owner[\(cookie)]") {
            bpf_map_update_elem(maps.podOwner.rawValue, &key, &owner, UInt64(BPF_EXIST))
        }
    }

    /// The pinned node object that has a pod registered under `cookie`, if any (for a pod reopened
    /// from its pins).
    static func find(podCookie cookie: UInt64, pinRoot: FilePath) -> NodeSockops? {
        guard let names = try? Files.list(pinRoot) else { return nil }
        for name in names.sorted() where name.hasPrefix("n-") {
            guard let node = try? open(pinnedAt: pinRoot.appending(name)) else { continue }
            var key = cookie
            var owner = Owner(pid: 0, pinned: 0, startTicks: 0)
            if bpf_map_lookup_elem(node.maps.podOwner.rawValue, &key, &owner) == 0 { return node }
        }
        return nil
    }

    /// The keys (struct zp_conn) of kubelet's open connections on the node.
    func kubeletConnectionKeys() throws(BPFError) -> [[UInt8]] {
        try PodRedirector.keys(maps.kubeletConnections, size: KubeletConnection.keySize, "zp_kubelet_conns")
    }

    /// Whether the node's kubelet connection map of `membership` holds `key` (a `zp_conn`, 40
    /// bytes); opens only that map's pin for a pinned node object. A node object that is gone
    /// holds nothing.
    static func containsKubeletConnection(_ membership: Membership, key: [UInt8]) throws(BPFError) -> Bool {
        precondition(key.count == KubeletConnection.keySize, "zp_conn is \(KubeletConnection.keySize) bytes")
        func lookup(_ map: CInt) throws(BPFError) -> Bool {
            var key = key
            var value: UInt64 = 0
            let rc = bpf_map_lookup_elem(map, &key, &value)
            if rc == 0 { return true }
            if -rc == ENOENT { return false }
            try libbpfCall("bpf_map_lookup_elem", "zp_kubelet_conns") { rc }
            return false
        }
        switch membership {
        case .unshared(let node):
            return try lookup(node.maps.kubeletConnections.rawValue)
        case .pinned(let directory):
            let path = directory.appending("map_kubelet_conns").string
            let fd = bpf_obj_get(path)
            if fd < 0 {
                if -fd == ENOENT { return false }
                try libbpfCall("bpf_obj_get", path) { fd }
            }
            defer { Glibc.close(fd) }
            return try lookup(fd)
        }
    }

    /// The netns cookies of the registered pods.
    func podCookies() throws(BPFError) -> [UInt64] {
        try PodRedirector.keys(maps.podOwner, size: 8, "zp_pod_owner").map { key in
            key.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }
    }

    // MARK: internals

    /// `struct zp_pod_owner`.
    private struct Owner {
        var pid: UInt32
        var pinned: UInt32
        var startTicks: UInt64
    }

    private func put(_ pod: Pod) throws(BPFError) {
        var key = pod.cookie
        // The one map-of-maps write (an RCU grace period); the rest are plain maps.
        var fd = UInt32(bitPattern: pod.activity.rawValue)
        try libbpfCall("bpf_map_update_elem", "zp_pod_activity[\(pod.cookie)]") {
            bpf_map_update_elem(maps.podActivity.rawValue, &key, &fd, UInt64(BPF_ANY))
        }
        try writeConfig(cookie: pod.cookie, pod.config)
        try replaceProbeSources(cookie: pod.cookie, with: pod.probeSources)
        var owner = Owner(pid: UInt32(getpid()), pinned: 0, startTicks: Self.ownStartTicks)
        try libbpfCall("bpf_map_update_elem", "zp_pod_owner[\(pod.cookie)]") {
            bpf_map_update_elem(maps.podOwner.rawValue, &key, &owner, UInt64(BPF_ANY))
        }
    }

    private func remove(_ cookie: UInt64) {
        for map in [maps.podOwner, maps.podActivity, maps.podConfig] {
            var key = cookie
            _ = bpf_map_delete_elem(map.rawValue, &key)
        }
        _ = try? replaceProbeSources(cookie: cookie, with: [])
    }

    /// Writes the copy of a pod's settings (`struct zp_config`: netns cookie, ignore loopback,
    /// identify kubelet).
    func writeConfig(cookie: UInt64, _ config: (UInt64, UInt32, UInt32)) throws(BPFError) {
        var key = cookie
        var value = config
        try libbpfCall("bpf_map_update_elem", "zp_pod_config[\(cookie)]") {
            bpf_map_update_elem(maps.podConfig.rawValue, &key, &value, UInt64(BPF_ANY))
        }
    }

    /// Replaces the copy of a pod's probe sources (16-byte address keys) with `sources`.
    func replaceProbeSources(cookie: UInt64, with sources: [[UInt8]]) throws(BPFError) {
        let prefix = withUnsafeBytes(of: cookie) { Array($0) }
        let current = Set(
            try PodRedirector.keys(maps.podProbeSources, size: 24, "zp_pod_probe_src").filter {
                Array($0.prefix(8)) == prefix
            }
        )
        let wanted = Set(sources.map { prefix + $0 })
        for stale in current.subtracting(wanted) {
            var key = stale
            _ = bpf_map_delete_elem(maps.podProbeSources.rawValue, &key)
        }
        for new in wanted.subtracting(current) {
            var key = new
            var one: UInt32 = 1
            try libbpfCall("bpf_map_update_elem", "zp_pod_probe_src[\(cookie)]") {
                bpf_map_update_elem(maps.podProbeSources.rawValue, &key, &one, UInt64(BPF_ANY))
            }
        }
    }

    private var isEmpty: Bool {
        var next: UInt64 = 0
        return bpf_map_get_next_key(maps.podActivity.rawValue, nil, &next) < 0
            && bpf_map_get_next_key(maps.podOwner.rawValue, nil, &next) < 0
    }

    /// Removes the pods whose registering process is gone and that are not pinned (a SIGKILLed
    /// shim cannot unregister).
    private func removeDeadPods() {
        guard let cookies = try? podCookies() else { return }
        for cookie in cookies {
            var key = cookie
            var owner = Owner(pid: 0, pinned: 0, startTicks: 0)
            guard bpf_map_lookup_elem(maps.podOwner.rawValue, &key, &owner) == 0 else { continue }
            if owner.pinned == 0 && !Self.isAlive(pid: pid_t(owner.pid), startTicks: owner.startTicks) {
                remove(cookie)
            }
        }
        // Entries without an owner (a process that died between the updates of `put`).
        func owned(_ key: [UInt8]) -> Bool {
            var cookie = key.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            var owner = Owner(pid: 0, pinned: 0, startTicks: 0)
            return bpf_map_lookup_elem(maps.podOwner.rawValue, &cookie, &owner) == 0
        }
        for (map, size) in [(maps.podActivity, 8), (maps.podConfig, 8), (maps.podProbeSources, 24)] {
            guard let keys = try? PodRedirector.keys(map, size: size, "zp_pod_*") else { continue }
            for key in keys where !owned(key) {
                var key = key
                _ = bpf_map_delete_elem(map.rawValue, &key)
            }
        }
    }

    /// Every other node directory under `root`: drops its dead pods and removes it when none is
    /// left (e.g. a test's node object whose process was killed).
    private static func collectGarbage(root: FilePath, except: String) {
        guard let names = try? Files.list(root) else { return }
        for name in names where name != except && name.hasPrefix("n-") {
            let directory = root.appending(name)
            guard let node = try? open(pinnedAt: directory) else {
                unpin(directory)
                continue
            }
            node.removeDeadPods()
            if node.isEmpty { unpin(directory) }
        }
    }

    /// Loads the node object, configures it, attaches its sockops program to the cgroup v2 root
    /// and, with a directory, pins everything there (directory 0700, files 0600).
    private static func create(
        settings: Settings,
        directory: FilePath?,
        preloaded: Loaded?
    ) throws(BPFError) -> NodeSockops {
        let loaded: Loaded
        if let preloaded { loaded = preloaded } else { loaded = try loadObject() }
        let (program, maps) = (loaded.program, loaded.maps)
        var zero: UInt32 = 0
        var config = settings.nodeCookie
        try libbpfCall("bpf_map_update_elem", "zp_node_config") {
            bpf_map_update_elem(maps.config.rawValue, &zero, &config, UInt64(BPF_ANY))
        }
        for var name in settings.kubeletNames {
            var one: UInt32 = 1
            try libbpfCall("bpf_map_update_elem", "zp_kubelet_names") {
                bpf_map_update_elem(maps.kubeletNames.rawValue, &name, &one, UInt64(BPF_ANY))
            }
        }
        let cgroup = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in
            try OwnedDescriptor.open(settings.cgroupRoot, O_RDONLY | O_DIRECTORY)
        }
        let link = SharedDescriptor(
            OwnedDescriptor(
                adopting: try libbpfCall("bpf_link_create(sockops)", settings.cgroupRoot.string) {
                    bpf_link_create(program.rawValue, cgroup.rawValue, BPF_CGROUP_SOCK_OPS, nil)
                }
            )
        )
        guard let directory else { return NodeSockops(maps: maps, directory: nil, link: link) }
        if mkdir(directory.string, 0o700) != 0 {
            throw .system(SystemError(call: "mkdir", subject: directory.string, errno: Errno(rawValue: Glibc.errno)))
        }
        do throws(BPFError) {
            for (name, fd) in maps.byPinName + [("link_sockops", link)] {
                let path = directory.appending(name).string
                try libbpfCall("bpf_obj_pin", path) { bpf_obj_pin(fd.rawValue, path) }
                try bpfSystem { () throws(SystemError) in try systemCall("chmod", path) { chmod(path, 0o600) } }
            }
        } catch {
            unpin(directory)
            throw error
        }
        return NodeSockops(maps: maps, directory: directory, link: nil)
    }

    /// Opens a pinned node object's maps (bpf_obj_get); the link stays held by its pin.
    private static func open(pinnedAt directory: FilePath) throws(BPFError) -> NodeSockops {
        func map(_ name: String) throws(BPFError) -> SharedDescriptor {
            let path = directory.appending(name).string
            return SharedDescriptor(
                OwnedDescriptor(adopting: try libbpfCall("bpf_obj_get", path) { bpf_obj_get(path) })
            )
        }
        guard Glibc.access(directory.appending("link_sockops").string, F_OK) == 0 else {
            throw .invalidArgument(
                name: "node pin directory",
                value: directory.string,
                reason: "link_sockops is missing"
            )
        }
        return NodeSockops(
            maps: NodeMaps(
                config: try map("map_node_config"),
                kubeletNames: try map("map_kubelet_names"),
                kubeletConnections: try map("map_kubelet_conns"),
                podActivity: try map("map_pod_activity"),
                podProbeSources: try map("map_pod_probe_src"),
                podConfig: try map("map_pod_config"),
                podOwner: try map("map_pod_owner")
            ),
            directory: directory,
            link: nil
        )
    }

    /// Runs `body` holding an exclusive flock on `root` (created 0700 if missing).
    private static func withLock<R>(_ root: FilePath, _ body: () throws(BPFError) -> R) throws(BPFError) -> R {
        if mkdir(root.string, 0o700) != 0 && Glibc.errno != EEXIST {
            throw .system(SystemError(call: "mkdir", subject: root.string, errno: Errno(rawValue: Glibc.errno)))
        }
        let lock = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in
            let fd = try OwnedDescriptor.open(root, O_RDONLY | O_DIRECTORY)
            try systemCall("flock(LOCK_EX)", root.string) { flock(fd.rawValue, LOCK_EX) }
            return fd
        }
        let result = Result { () throws(BPFError) -> R in try body() }
        try? lock.close()  // releases the lock
        return try result.get()
    }

    private static func unpin(_ directory: FilePath) { PodRedirector.unpin(directory) }

    /// This process's start time in clock ticks since boot (/proc/self/stat field 22).
    private static let ownStartTicks: UInt64 = startTicks(of: getpid()) ?? 0

    private static func startTicks(of pid: pid_t) -> UInt64? {
        guard let text = try? Files.readText(FilePath("/proc/\(pid)/stat")),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // Fields after the command: state is field 3, so starttime (22) is the 20th of these.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count >= 20 else { return nil }
        return UInt64(fields[19])
    }

    private static func isAlive(pid: pid_t, startTicks: UInt64) -> Bool {
        guard pid > 0, let current = Self.startTicks(of: pid) else { return false }
        return current == startTicks
    }
}
