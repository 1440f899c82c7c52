import Foundation
import SystemPackage
import Testing
import ZPTestSupport

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConfinedMountNamespacePlanTests {
    /// A node's mount points: the system's, and two pods' (rootfs, netns, shm, a volume).
    static let mountPoints = [
        "/", "/proc", "/proc/sys/fs/binfmt_misc", "/sys", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/dev",
        "/dev/pts", "/run", "/run/netns/cni-a", "/run/netns/cni-b", "/run/containerd/t/k8s.io/a/rootfs",
        "/run/containerd/t/k8s.io/b/rootfs", "/run/containerd/s/a/shm", "/run/containerd/s/b/shm",
        "/var/lib/kubelet", "/var/lib/kubelet/pods/a/volumes/secret", "/var/lib/kubelet/pods/b/volumes/secret",
        "/run/runc/a/zeropod-restore/criu-root", "/run/runc/a/zeropod-restore/tmpfs-0",
    ]

    @Test func plan_keepsTheMountsThePathsLieOn_andNoOtherPodsMounts() {
        let (privateBinds, boundBinds) = ConfinedMountNamespace.plan(
            paths: ["/usr", "/run/criu", "/var/lib/zeropod/images/a"],
            trees: ["/proc", "/sys", "/dev"],
            bound: [
                .init("/run/runc/a/zeropod-restore/criu-root", recursive: true),
                .init("/var/lib/kubelet/pods/a/volumes/secret"),
                .init("/var/lib/kubelet/pods/a/etc-hosts"),
                .init("/run/runc/a/zeropod-restore/tmpfs-0"),
                .init("/sys/fs/cgroup/memory/pod-a"),
            ],
            mountPoints: Self.mountPoints
        )
        #expect(
            privateBinds.map(\.description) == [
                "/", "/dev (recursive)", "/proc (recursive)", "/run", "/sys (recursive)", "/var/lib/kubelet",
            ],
            "/ first, parents before children; what lies inside a tree comes with it"
        )
        #expect(
            boundBinds.map(\.description) == [
                "/run/runc/a/zeropod-restore/criu-root (recursive)", "/run/runc/a/zeropod-restore/tmpfs-0",
                "/sys/fs/cgroup/memory/pod-a", "/var/lib/kubelet/pods/a/etc-hosts",
                "/var/lib/kubelet/pods/a/volumes/secret",
            ],
            "by depth, then by name"
        )
        let kept = Set((privateBinds + boundBinds).map(\.path))
        for other in [
            "/run/netns/cni-b", "/run/containerd/t/k8s.io/b/rootfs", "/var/lib/kubelet/pods/b/volumes/secret",
        ] {
            #expect(!kept.contains(other), "another pod's \(other) is left out")
        }
    }

    @Test func plan_onlySlash_whenNothingElseIsMounted() {
        let (privateBinds, boundBinds) = ConfinedMountNamespace.plan(
            paths: ["/usr", "/tmp"],
            trees: [],
            bound: [.init("/"), .init("/srv/root", recursive: true), .init("/srv/root", recursive: true)],
            mountPoints: ["/"]
        )
        #expect(privateBinds.map(\.description) == ["/"])
        #expect(boundBinds.map(\.description) == ["/srv/root (recursive)"], "/ and duplicates bound once")
    }
}

@Suite(
    "a mount namespace with only the mounts some paths need",
    .serialized,
    .enabled(if: Privileges.isRoot, "needs root: mount namespaces")
)
struct ConfinedMountNamespaceTests {
    /// In a copy of this namespace with 500 extra tmpfs mounts, a thread that enters a confined
    /// namespace sees the kept paths (and their files) and none of the extra mounts; a process it
    /// spawns starts there too; the host never sees any of it.
    @Test func enter_keepsWhatIsNeeded_dropsTheRest() throws {
        let base = try TemporaryDirectory("zpsys-confined")
        let crowd = base.path + "/crowd"
        let kept = base.path + "/kept"
        let bound = base.path + "/bound"
        let assembly = base.path + "/assembly"
        for dir in [crowd, kept, bound, assembly] { mkdir(dir, 0o700) }
        let hostBefore = try MountPoints.ofThisThread().count
        let outcome = try MountPoints.performInNamespaceCopy { () -> Result<[String: String], SystemError> in
            Result { () throws(SystemError) -> [String: String] in
                for i in 0..<500 {
                    let dir = crowd + "/\(i)"
                    mkdir(dir, 0o700)
                    try MountPoints.mount(source: "t", target: dir, type: "tmpfs", flags: 0, data: "size=4k")
                }
                for dir in [kept, bound] {
                    try MountPoints.mount(source: "t", target: dir, type: "tmpfs", flags: 0, data: "size=64k")
                    try Files.write(FilePath(dir + "/file"), Array("here".utf8))
                }
                let copy = try MountPoints.ofThisThread()
                var out: [String: String] = [
                    "copy": "\(copy.count)",
                    "copyCrowd": "\(copy.filter { $0.mountPoint.hasPrefix(crowd) }.count)",
                ]
                let confined = ConfinedMountNamespace(
                    paths: [kept + "/file"],
                    bound: [.init(bound)],
                    assemblyFolder: assembly
                )
                let entered: ConfinedMountNamespace.Entered
                do throws(ConfinedMountNamespace.Failure) { entered = try confined.enter() } catch { throw error.error }
                out["confined"] = "\(entered.mounts)"
                out["kept"] = (try? Files.readText(FilePath(kept + "/file"))) ?? "missing"
                out["bound"] = (try? Files.readText(FilePath(bound + "/file"))) ?? "missing"
                out["crowd"] = "\(try MountPoints.ofThisThread().filter { $0.mountPoint.hasPrefix(crowd) }.count)"
                out["proc"] = (try? Files.readText(FilePath("/proc/thread-self/comm"))) != nil ? "yes" : "no"
                return out
            }
        }.get()
        print("mounts: host \(hostBefore), copy \(outcome["copy"]!), confined \(outcome["confined"]!)")
        // Other tests may mount and unmount in the host's namespace meanwhile: counts are compared
        // with bounds, never with the host's at another moment.
        #expect(outcome["copyCrowd"] == "500")
        #expect(Int(outcome["confined"]!)! < 60, "only a few mounts: \(outcome)")
        #expect(outcome["crowd"] == "0", "none of the 500 extra mounts")
        #expect(outcome["kept"] == "here" && outcome["bound"] == "here", "\(outcome)")
        #expect(outcome["proc"] == "yes", "/proc is there")
        #expect(
            try MountPoints.ofThisThread().allSatisfy { !$0.mountPoint.hasPrefix(base.path) },
            "nothing reached the host's namespace"
        )
    }

    /// A failure half-way (a bound path's mount point cannot be made) puts the thread back where
    /// it was.
    @Test func enter_failure_goesBack() throws {
        let base = try TemporaryDirectory("zpsys-confined-fail")
        let hostNamespace = try Files.readLink(FilePath("/proc/thread-self/ns/mnt"))
        let result = try MountPoints.performInNamespaceCopy { () -> (String, String) in
            let before = (try? Files.readLink(FilePath("/proc/thread-self/ns/mnt"))) ?? "?"
            // The assembly folder does not exist: the first bind fails.
            let confined = ConfinedMountNamespace(paths: [], bound: [], assemblyFolder: base.path + "/missing")
            var failure = ""
            do throws(ConfinedMountNamespace.Failure) { _ = try confined.enter() } catch {
                failure = "\(error.wentBack) \(error.error.call)"
            }
            let after = (try? Files.readLink(FilePath("/proc/thread-self/ns/mnt"))) ?? "?"
            return (failure, before == after ? "same" : "\(before) → \(after)")
        }
        #expect(result.0 == "true mount", "\(result)")
        #expect(result.1 == "same", "back in the namespace it was in")
        #expect(try Files.readLink(FilePath("/proc/thread-self/ns/mnt")) == hostNamespace)
    }
}
