import SystemPackage
import Testing
import ZPCheckpoint
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The cgroup yard (decision 0072): links named as CRIU names the hierarchies, to the mounts of
/// their roots.
@Suite struct CgroupYardTests {
    private static func mount(
        _ id: Int,
        _ point: String,
        _ type: String,
        _ superOptions: String,
        root: String = "/"
    ) -> MountInfo {
        MountInfo(
            line: "\(id) 1 0:\(id) \(root) \(point) rw,nosuid - \(type) \(type) \(superOptions)"
        )!
    }

    /// A hybrid host like this one: v1 hierarchies, a named one and the unified one.
    private static let hybrid = [
        mount(30, "/sys/fs/cgroup", "tmpfs", "ro,mode=755"),
        mount(31, "/sys/fs/cgroup/unified", "cgroup2", "rw,nsdelegate"),
        mount(32, "/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
        mount(33, "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        mount(34, "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
    ]

    @Test func hybridHost_everyHierarchyNamedAsCRIUNamesIt() {
        let cgroups = "4:memory:/pod/c1\n3:cpu,cpuacct:/pod/c1\n1:name=systemd:/\n0::/pod/c1\n"
        #expect(
            CgroupYard.entries(cgroupFile: cgroups, mounts: Self.hybrid) == [
                .init(name: "memory", mountPoint: "/sys/fs/cgroup/memory"),
                .init(name: "cpu,cpuacct", mountPoint: "/sys/fs/cgroup/cpu,cpuacct"),
                .init(name: "systemd", mountPoint: "/sys/fs/cgroup/systemd"),
                .init(name: "unified", mountPoint: "/sys/fs/cgroup/unified"),
            ]
        )
    }

    @Test func unifiedHost_oneLinkToTheCgroup2Mount() {
        let mounts = [Self.mount(40, "/sys/fs/cgroup", "cgroup2", "rw,nsdelegate,memory_recursiveprot")]
        #expect(
            CgroupYard.entries(cgroupFile: "0::/kubepods/pod1/c1\n", mounts: mounts) == [
                .init(name: "unified", mountPoint: "/sys/fs/cgroup")
            ]
        )
    }

    @Test func aHierarchyWithoutAMountOfItsRoot_noYard() {
        // pids is not mounted at all; a cgroup2 mount of a subtree is not the hierarchy's root.
        #expect(CgroupYard.entries(cgroupFile: "5:pids:/c1\n0::/c1\n", mounts: Self.hybrid) == nil)
        let subtree = [Self.mount(41, "/sys/fs/cgroup", "cgroup2", "rw", root: "/kubepods")]
        #expect(CgroupYard.entries(cgroupFile: "0::/c1\n", mounts: subtree) == nil)
        #expect(CgroupYard.entries(cgroupFile: "not a cgroup file", mounts: Self.hybrid) == nil)
        #expect(CgroupYard.entries(cgroupFile: "", mounts: Self.hybrid) == nil)
    }

    @Test func make_onThisHost_linksLeadToTheHierarchies_andRemoveLeavesNothing() throws {
        let folder = FilePath("/tmp/zpck-yard-\(getpid())")
        let yard = try #require(
            CgroupYard.make(at: folder, forProcess: getpid()),
            "every hierarchy of this process has a mount of its root here"
        )
        let names = try Files.list(yard)
        let own = try Files.readText(FilePath("/proc/self/cgroup")).split(separator: "\n")
        #expect(names.count == Set(own.map { $0.split(separator: ":", omittingEmptySubsequences: false)[1] }).count)
        for name in names {
            // Each link leads to a cgroup hierarchy: its root has cgroup.procs.
            #expect(access(yard.appending(name).appending("cgroup.procs").string, F_OK) == 0, "\(name)")
        }
        #expect(try Files.permissions(of: yard) == 0o700)
        CgroupYard.remove(yard)
        #expect(access(folder.string, F_OK) != 0, "the yard is gone")
    }
}
