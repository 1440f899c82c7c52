import CZPBPF
import Glibc
import SystemPackage
import ZPSystem

/// Kernel and system features ZPBPF needs, probed for a node check (`zeropod doctor`).
public enum BPFFeatures {
    /// One probed feature.
    public struct Feature: Sendable, Equatable, CustomStringConvertible {
        /// What was probed, e.g. "sk_lookup".
        public var name: String
        /// The first kernel (or setup) that has it.
        public var requirement: String
        /// Whether this machine has it.
        public var supported: Bool

        /// "name: ok" or "name: missing (needs …)".
        public var description: String { supported ? "\(name): ok" : "\(name): missing (needs \(requirement))" }
    }

    /// Probes every feature: program types and helpers (libbpf_probe_bpf_prog_type/_helper), a
    /// real tcx attach in a throw-away network namespace, bpffs at `bpffs` and a cgroup v2 mount.
    /// Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN).
    public static func probe(bpffs: FilePath = "/sys/fs/bpf") -> [Feature] {
        var tcx = false
        if let loaded = try? EmbeddedObject.load() { tcx = FeatureProbe.tcx(program: loaded.tcIngress) }
        let isBPFFS = czpbpf_is_bpffs(bpffs.string) == 1
        let cgroup2 = (try? MountInfo.cgroup2MountPoint()) != nil
        return [
            Feature(
                name: "sk_lookup",
                requirement: "Linux 5.9",
                supported: FeatureProbe.skLookup && FeatureProbe.skAssign
            ),
            Feature(name: "sockops", requirement: "Linux 4.13", supported: FeatureProbe.sockops),
            Feature(
                name: "bpf_get_netns_cookie in sockops",
                requirement: "Linux 5.15",
                supported: FeatureProbe.sockopsNetnsCookie
            ),
            Feature(
                name: "bpf_get_current_task_btf in sockops",
                requirement: "kernel BTF and the helper in sockops (verified on 6.18; older kernels unchecked)",
                supported: FeatureProbe.sockopsCurrentTask
            ),
            Feature(name: "tcx", requirement: "Linux 6.6", supported: tcx),
            Feature(name: "bpffs at \(bpffs)", requirement: "mount -t bpf bpf \(bpffs)", supported: isBPFFS),
            Feature(name: "cgroup v2 mount", requirement: "a cgroup2 mount (unified or hybrid)", supported: cgroup2),
        ]
    }
}
