// Where a process's cgroups are: its `/proc/PID/cgroup` lines joined with the host's cgroup mounts.

/// The cgroup folders of processes.
public enum ProcessCgroups {
    /// The host folder of each cgroup of a process, by controller: every v1 controller named in its
    /// `/proc/PID/cgroup` text (controllers mounted together, like `cpu,cpuacct`, map to the same
    /// folder; a named hierarchy like `name=systemd` under its full name), and `""` for its cgroup2
    /// folder when cgroup2 is mounted.
    /// - Parameters:
    ///   - procCgroup: the text of `/proc/PID/cgroup` (`ID:controllers:path` lines).
    ///   - mounts: the host's mounts (`MountInfo.read()`).
    public static func folders(procCgroup: String, mounts: [MountInfo]) -> [String: String] {
        var out: [String: String] = [:]
        for line in procCgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = String(parts[2])
            if parts[1].isEmpty {
                if let m = mounts.first(where: { $0.fsType == "cgroup2" }) { out[""] = join(m, path) }
                continue
            }
            let names = parts[1].split(separator: ",").map(String.init)
            guard
                let m = mounts.first(where: { m in
                    m.fsType == "cgroup"
                        && names.allSatisfy { m.superOptions.split(separator: ",").contains(Substring($0)) }
                })
            else { continue }
            for name in names { out[name] = join(m, path) }
        }
        return out
    }

    /// The host folder of cgroup `path` on mount `m` (whose root may be a sub-cgroup).
    private static func join(_ m: MountInfo, _ path: String) -> String {
        var rel = path
        if m.root != "/", rel.hasPrefix(m.root) { rel = String(rel.dropFirst(m.root.count)) }
        if rel == "/" { rel = "" }
        return m.mountPoint + (rel.isEmpty || rel.hasPrefix("/") ? rel : "/" + rel)
    }
}
