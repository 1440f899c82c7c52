import Foundation
import SystemPackage
import Testing
import ZPTestSupport

@testable import ZPCheckpoint

@Suite("tmpfs copies", .enabled(if: isRoot, "needs root to mount tmpfs and mknod"))
struct TmpfsSnapshotTests {
    @Test func captureAndRecreate_roundTripsFilesDirsLinksDevicesOwnersModesTimes() throws {
        let a = try TemporaryDirectory("zpck-tmpfs-a")
        let b = try TemporaryDirectory("zpck-tmpfs-b")
        try shell(
            "mount -t tmpfs -o size=4m,mode=1777 tmpfs '\(a.path)' && mount -t tmpfs -o size=4m tmpfs '\(b.path)'"
        )
        defer { _ = try? shell("umount '\(a.path)'; umount '\(b.path)'", allowFailure: true) }
        try shell(
            """
            cd '\(a.path)' && mkdir -p d/e && echo hello > d/e/f && printf '' > empty && chmod 4750 d/e/f \
            && chown 33:33 d && ln -s d/e/f link && mknod nul c 1 3 && touch -d 2020-01-02 d/e/f d/e d
            """
        )
        let snap = try TmpfsSnapshot.capture(mountPoint: "/x", root: a.path)
        #expect(snap.entries.map(\.path) == ["", "d", "d/e", "d/e/f", "empty", "link", "nul"])
        let decoded = try TmpfsSnapshot(decoding: snap.encoded())
        #expect(decoded == snap)
        try decoded.recreate(at: b.path)
        let again = try TmpfsSnapshot.capture(mountPoint: "/x", root: b.path)
        #expect(again == snap, "same files, modes, owners, times, targets and devices")
    }

    @Test func capture_keepsMountPointsButNotTheContentMountedOverThem() throws {
        let a = try TemporaryDirectory("zpck-tmpfs-m")
        try shell("mount -t tmpfs tmpfs '\(a.path)' && mkdir '\(a.path)/sub' && touch '\(a.path)/file'")
        try shell(
            "mount -t tmpfs tmpfs '\(a.path)/sub' && echo secret > '\(a.path)/sub/inner' && mount --bind /etc/hostname '\(a.path)/file'"
        )
        defer {
            _ = try? shell("umount '\(a.path)/file'; umount '\(a.path)/sub'; umount '\(a.path)'", allowFailure: true)
        }
        let snap = try TmpfsSnapshot.capture(mountPoint: "/x", root: a.path)
        #expect(snap.entries.map(\.path) == ["", "file", "sub"], "nothing below the sub mount")
        #expect(snap.entries.first { $0.path == "file" }?.content == [], "no content of the file mounted over it")
    }

    @Test func capture_refusesFifosAndHardLinks() throws {
        let a = try TemporaryDirectory("zpck-tmpfs-c")
        try shell("mount -t tmpfs tmpfs '\(a.path)'")
        defer { _ = try? shell("umount '\(a.path)'", allowFailure: true) }
        try shell("cd '\(a.path)' && mkfifo p")
        #expect(throws: TmpfsSnapshot.Unsupported.self) { try TmpfsSnapshot.capture(mountPoint: "/x", root: a.path) }
        try shell("cd '\(a.path)' && rm p && echo x > f && ln f g")
        #expect(throws: TmpfsSnapshot.Unsupported.self) { try TmpfsSnapshot.capture(mountPoint: "/x", root: a.path) }
    }
}
