import CZPBPF
import Glibc
import SystemPackage
import ZPSystem

/// The BPF object compiled from `bpf/zpbpf.bpf.c` and embedded in the library (CZPBPF's
/// generated `zpbpf_object.c`); see `scripts/bpf-embed.sh`.
enum EmbeddedObject {
    /// SHA-256 (hex) of the source the embedded object was compiled from.
    static var sourceSHA256: String { String(cString: czpbpf_source_sha256()) }

    /// SHA-256 (hex) of the object bytes, recorded when the array was generated.
    static var objectSHA256: String { String(cString: czpbpf_embedded_object_sha256()) }

    /// The embedded object bytes (a copy).
    static var bytes: [UInt8] {
        Array(UnsafeBufferPointer(start: czpbpf_embedded_object(), count: Int(czpbpf_object_len)))
    }

    /// Names of the programs in the object, in the order `Loaded` keeps them.
    static let programNames = ["zp_sk_lookup", "zp_tc_ingress", "zp_reuseport_migrate"]

    /// Program and map descriptors of one loaded copy of the object, owned here. libbpf's
    /// bpf_object is closed right after loading; these duplicates keep the kernel objects alive.
    struct Loaded: Sendable {
        let skLookup: SharedDescriptor
        /// tc ingress: drops the segments of held connections (decision 0045), stamps activity.
        let tcIngress: SharedDescriptor
        /// Migrates a closing handover listener's queue (decision 0046).
        let reuseportMigrate: SharedDescriptor
        let maps: Maps
    }

    /// Opens and loads the object (bpf_object__open_mem, bpf_object__load), so that every program
    /// passes the verifier.
    /// - Throws: `BPFError.notSupported` when a feature probe shows the kernel lacks a program type
    ///   or helper; `BPFError.loadFailed` with the verifier log otherwise.
    static func load() throws(BPFError) -> Loaded {
        try withLoadedObject(name: "zpbpf", open: { czpbpf_open_embedded() }) { (object) throws(BPFError) -> Loaded in
            Loaded(
                skLookup: try program(object, programNames[0]),
                tcIngress: try program(object, programNames[1]),
                reuseportMigrate: try program(object, programNames[2]),
                maps: Maps(
                    redirectOn: try map(object, "zp_redirect_on"),
                    listeners: try map(object, "zp_listeners"),
                    activity: try map(object, "zp_activity"),
                    probeSources: try map(object, "zp_probe_src"),
                    config: try map(object, "zp_config"),
                    nodeKubeletConnections: try map(object, "zp_node_kubelet_conns"),
                    held: try map(object, "zp_held"),
                    handover: try map(object, "zp_handover"),
                    events: try map(object, "zp_events"),
                    handoverSockets: try map(object, "zp_handover_socks")
                )
            )
        }
    }

    /// Opens an embedded object with `open`, loads it (capturing libbpf's log), hands it to `body`
    /// to take what it needs (as duplicates) and closes it.
    static func withLoadedObject<R>(
        name: String,
        open: () -> OpaquePointer?,
        _ body: (OpaquePointer) throws(BPFError) -> R
    ) throws(BPFError) -> R {
        var log = [CChar](repeating: 0, count: 1 << 16)
        let object = try log.withUnsafeMutableBufferPointer { (buffer) throws(BPFError) -> OpaquePointer in
            czpbpf_capture_log(buffer.baseAddress, buffer.count)
            defer { czpbpf_capture_log(nil, 0) }
            let object = try libbpfPointer("bpf_object__open_mem", name) { open() }
            let rc = bpf_object__load(object)
            if rc < 0 {
                bpf_object__close(object)
                if let missing = FeatureProbe.missingForLoad() { throw missing }
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw .loadFailed(errno: Errno(rawValue: -rc), log: text)
            }
            return object
        }
        defer { bpf_object__close(object) }
        return try body(object)
    }

    /// A duplicate of the descriptor of program `name` of a loaded object.
    static func program(_ object: OpaquePointer, _ name: String) throws(BPFError) -> SharedDescriptor {
        let prog = try libbpfPointer("bpf_object__find_program_by_name", name) {
            bpf_object__find_program_by_name(object, name)
        }
        let fd = try libbpfCall("bpf_program__fd", name) { bpf_program__fd(prog) }
        return try .duplicating(fd, name)
    }

    /// A duplicate of the descriptor of map `name` of a loaded object.
    static func map(_ object: OpaquePointer, _ name: String) throws(BPFError) -> SharedDescriptor {
        let fd = try libbpfCall("bpf_object__find_map_fd_by_name", name) {
            bpf_object__find_map_fd_by_name(object, name)
        }
        return try .duplicating(fd, name)
    }
}

/// The pod's maps (see bpf/zpbpf.bpf.c for their layouts). Shared owners: the maps live in the
/// redirector's Mutex-protected handles and in arrays.
struct Maps: Sendable {
    let redirectOn: SharedDescriptor
    let listeners: SharedDescriptor
    let activity: SharedDescriptor
    let probeSources: SharedDescriptor
    let config: SharedDescriptor
    /// The node's kubelet connections at index 0 (array of maps; filled when the pod registers
    /// with the node's sockops object, decision 0052).
    let nodeKubeletConnections: SharedDescriptor
    /// Held connections by 4-tuple (decision 0045).
    let held: SharedDescriptor
    /// Ports with a handover listener (decision 0046).
    let handover: SharedDescriptor
    /// The wake events (ringbuf) of both.
    let events: SharedDescriptor
    /// The handover listeners by slot (`REUSEPORT_SOCKARRAY`), which `zp_reuseport_migrate`
    /// selects for new connections while they are open; nil in a pod pinned by a shim from before
    /// the map (the kernel then picks by hash, as it did).
    let handoverSockets: SharedDescriptor?

    /// Pin file names, in bpffs, for each map.
    var byPinName: [(String, SharedDescriptor)] {
        [
            ("map_redirect_on", redirectOn), ("map_listeners", listeners), ("map_activity", activity),
            ("map_probe_src", probeSources), ("map_config", config),
            ("map_node_kubelet_conns", nodeKubeletConnections),
            ("map_held", held), ("map_handover", handover), ("map_events", events),
        ] + (handoverSockets.map { [("map_handover_socks", $0)] } ?? [])
    }
}

/// Cached kernel feature probes, run only after something failed, to turn a bare EINVAL into
/// `BPFError.notSupported`.
enum FeatureProbe {
    static let skLookup: Bool = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, nil) == 1
    static let sockops: Bool = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SOCK_OPS, nil) == 1
    static let sockopsNetnsCookie: Bool =
        libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie, nil) == 1
    static let skAssign: Bool = libbpf_probe_bpf_helper(BPF_PROG_TYPE_SK_LOOKUP, BPF_FUNC_sk_assign, nil) == 1
    /// The kubelet check reads the connecting task (decision 0040).
    static let sockopsCurrentTask: Bool =
        libbpf_probe_bpf_helper(BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_current_task_btf, nil) == 1

    /// Whether a tcx ingress link attaches (Linux 6.6): tried on `lo` of a throw-away network
    /// namespace (a thread that unshared one, ZPSystem), and closed again.
    static func tcx(program: SharedDescriptor) -> Bool {
        let prog = program.rawValue
        let attached = try? NetworkNamespace.performInNewNamespace { () -> Bool in
            let lo = if_nametoindex("lo")
            guard lo != 0 else { return false }
            let fd = bpf_link_create(prog, CInt(lo), bpf_attach_type(rawValue: UInt32(CZPBPF_TCX_INGRESS)), nil)
            guard fd >= 0 else { return false }
            _ = OwnedDescriptor(adopting: fd)  // closed at once: the probe only attaches
            return true
        }
        return attached ?? false
    }

    /// The first missing feature that explains a failed object load, if any.
    static func missingForLoad() -> BPFError? {
        if !skLookup || !skAssign { return .notSupported(feature: "sk_lookup", minimumKernel: "5.9") }
        if !sockops { return .notSupported(feature: "sockops", minimumKernel: "4.13") }
        if !sockopsNetnsCookie {
            return .notSupported(feature: "bpf_get_netns_cookie in sockops", minimumKernel: "5.15")
        }
        if !sockopsCurrentTask {
            return .notSupported(
                feature: "bpf_get_current_task_btf in sockops (kubelet identification)",
                minimumKernel: "6.18 (the kernel it was verified on; older ones unchecked)"
            )
        }
        return nil
    }
}
