import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A CRIU cgroup yard made of symbolic links to the hierarchies the host has mounted (decision
/// 0072).
///
/// Without a yard, every CRIU dump and restore that manages cgroups mounts each hierarchy anew
/// (`fsopen`/`fsconfig`/`fsmount` on a dump, a tmpfs with one mount per hierarchy on a restore,
/// detached again at its end). On these nodes the first `cgroup2` file system a process creates
/// costs 10-13 ms, and every dump is a new CRIU process. With
/// `cgroup_yard` CRIU opens `<yard>/<name>` instead, where `name` is the hierarchy as CRIU names
/// it: `unified` for cgroup v2, the named hierarchy's name without `name=` (`systemd`), or the
/// comma-separated controllers of a v1 hierarchy (`cpu,cpuacct`). A link to the mount point of
/// the hierarchy's root is such a directory.
public enum CgroupYard {
    /// A yard entry: the name CRIU looks for and the mount point it leads to.
    public struct Entry: Equatable, Sendable {
        /// The folder name CRIU opens in the yard (`unified`, `systemd`, `cpu,cpuacct`).
        public var name: String
        /// Where the hierarchy's root is mounted (`/sys/fs/cgroup/unified`).
        public var mountPoint: String

        /// An entry leading `name` to `mountPoint`.
        public init(name: String, mountPoint: String) {
            self.name = name
            self.mountPoint = mountPoint
        }
    }

    /// The yard's entries for the hierarchies listed in `cgroupFile` (the text of
    /// `/proc/<pid>/cgroup`), each led to a mount of that hierarchy's root found in `mounts`; nil
    /// when any hierarchy has none (CRIU then mounts its own yard, as without this).
    public static func entries(cgroupFile: String, mounts: [MountInfo]) -> [Entry]? {
        var entries: [Entry] = []
        for line in cgroupFile.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { return nil }
            let controllers = fields[1]
            let name: String
            let match: (MountInfo) -> Bool
            if controllers.isEmpty {
                name = "unified"
                match = { $0.fsType == "cgroup2" }
            } else {
                let wanted = controllers.split(separator: ",").map(String.init)
                name = wanted.map { $0.hasPrefix("name=") ? String($0.dropFirst(5)) : $0 }.joined(separator: ",")
                match = { m in
                    guard m.fsType == "cgroup" else { return false }
                    let options = Set(m.superOptions.split(separator: ",").map(String.init))
                    return wanted.allSatisfy(options.contains)
                }
            }
            guard !entries.contains(where: { $0.name == name }) else { continue }
            guard let mount = mounts.first(where: { $0.root == "/" && match($0) }) else { return nil }
            entries.append(Entry(name: name, mountPoint: mount.mountPoint))
        }
        return entries.isEmpty ? nil : entries
    }

    /// Makes `directory` anew (an owner-only folder; whatever was there is removed) with one link
    /// per hierarchy of process `pid`, from this process's view of the mounts.
    /// - Returns: the yard, or nil when a hierarchy has no mount of its root here or the folder
    ///   could not be made (the caller then lets CRIU mount its own).
    public static func make(at directory: FilePath, forProcess pid: Int32) -> FilePath? {
        guard let cgroups = try? Files.readText(FilePath("/proc/\(pid)/cgroup")),
            let mounts = try? MountInfo.read(),
            let entries = entries(cgroupFile: cgroups, mounts: mounts)
        else { return nil }
        remove(directory)
        guard (try? Files.makeOwnerOnlyDirectory(directory)) != nil else { return nil }
        for entry in entries where symlink(entry.mountPoint, directory.appending(entry.name).string) != 0 {
            remove(directory)
            return nil
        }
        return directory
    }

    /// Removes a yard `make(at:forProcess:)` made (its links, then the folder); nothing else in
    /// it is touched, and a folder that holds anything else stays.
    public static func remove(_ directory: FilePath) {
        guard let names = try? Files.list(directory) else { return }
        for name in names {
            let path = directory.appending(name).string
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFLNK { unlink(path) }
        }
        rmdir(directory.string)
    }
}
