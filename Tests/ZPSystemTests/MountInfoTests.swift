import SystemPackage
import Testing
import ZPTestSupport

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct MountInfoTests {
    /// Lines as the kernel writes them (from proc(5) and from this machine kind's mountinfo).
    static let text = """
        36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
        25 1 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
        812 30 0:57 / /run/my\\040dir\\011tab\\134back rw,relatime - tmpfs my\\040source rw,size=1024k
        813 30 0:58 / /- rw shared:1 master:2 - tmpfs - rw
        not a mountinfo line
        """

    @Test func parse_readsEveryField_andUnescapes() {
        let mounts = MountInfo.parse(Self.text)
        #expect(mounts.count == 4)
        #expect(
            mounts[0]
                == MountInfo(
                    mountID: 36,
                    parentID: 35,
                    device: "98:0",
                    root: "/mnt1",
                    mountPoint: "/mnt2",
                    mountOptions: "rw,noatime",
                    optionalFields: ["master:1"],
                    fsType: "ext3",
                    source: "/dev/root",
                    superOptions: "rw,errors=continue"
                )
        )
        #expect(mounts[1].fsType == "cgroup2" && mounts[1].mountPoint == "/sys/fs/cgroup/unified")
        #expect(mounts[2].mountPoint == "/run/my dir\ttab\\back")
        #expect(mounts[2].source == "my source")
        #expect(mounts[3].mountPoint == "/-" && mounts[3].optionalFields == ["shared:1", "master:2"])
        #expect(mounts[3].source == "-" && mounts[3].fsType == "tmpfs")
    }

    @Test(arguments: [
        ("plain", "plain"),
        ("a\\040b", "a b"),
        ("\\011\\012\\134", "\t\n\\"),
        ("trailing\\04", "trailing\\04"),
        ("not\\999octal", "not\\999octal"),
        ("\\", "\\"),
        ("caf\\303\\251", "café"),
    ])
    func unescape_decodesOctalEscapesOnly(raw: String, decoded: String) {
        #expect(MountInfo.unescape(raw[...]) == decoded)
    }

    /// A real tmpfs mounted on a path with a space, a tab and a backslash: the kernel escapes it
    /// in /proc/self/mountinfo and the parser gives the path back.
    @Test(.enabled(if: Privileges.isRoot, "mounting needs root"))
    func realMount_withEscapedCharacters_isFoundByItsPath() throws {
        let dir = "/tmp/zpsystem \(getpid())\tmount\\point"
        #expect(mkdir(dir, 0o700) == 0)
        defer { rmdir(dir) }
        try MountPoints.mount(source: "zp sys", target: dir, type: "tmpfs", flags: 0, data: "size=64k")
        var mounted = true
        defer { if mounted { try? MountPoints.unmount(dir) } }
        let raw = try Files.readText("/proc/self/mountinfo")
        #expect(raw.contains("/tmp/zpsystem\\040\(getpid())\\011mount\\134point"), "the kernel escapes the path")
        let entry = try MountInfo.read().first { $0.mountPoint == dir }
        #expect(entry?.fsType == "tmpfs")
        #expect(entry?.source == "zp sys")
        #expect(entry?.superOptions.contains("size=64k") == true)
        #expect(MountPoints.under("/tmp/zpsystem \(getpid())").contains(dir))
        try MountPoints.unmount(dir)
        mounted = false
        #expect(try MountInfo.read().contains { $0.mountPoint == dir } == false)
        try MountPoints.unmount(dir)  // not a mount point any more: counts as done
    }
}

@Suite struct MountPointsOfTextTests {
    @Test func mountPoints_areField5_unescaped_andMatchTheFullParse() {
        let text = MountInfoTests.text
        #expect(MountInfo.mountPoints(in: text) == MountInfo.parse(text).map(\.mountPoint))
        #expect(MountInfo.mountPoints(in: text) == ["/mnt2", "/sys/fs/cgroup/unified", "/run/my dir\ttab\\back", "/-"])
    }
}
