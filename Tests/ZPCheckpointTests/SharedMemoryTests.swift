import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Shared anonymous memory across a dump and a restore (zeropod's CRIU build writes its pages into
/// the restored memfd with `sendfile`, before the restore stage: scripts/criu/0005-shared-memory-restore.patch,
/// decision 0074): a parent and its forked child share one `MAP_SHARED | MAP_ANONYMOUS` area holding random
/// bytes, touched zero pages, a hole never touched and more random bytes. Each checks the area's
/// hash every 100 ms and counts in a mailbox slot of its own in the area's last page; after the
/// restore both must see the same bytes, and each must see the other's counter move (one area,
/// not two copies).
@Suite("Shared anonymous memory across a dump and a restore", .serialized, .enabled(if: isRoot, "needs root for CRIU"))
struct SharedMemoryTests {
    static let script = """
        import hashlib, mmap, os, struct, sys, time
        out = sys.argv[1]
        mib = 1 << 20
        size = 12 * mib + 4096
        m = mmap.mmap(-1, size)
        m[0:4 * mib] = os.urandom(4 * mib)
        for i in range(4 * mib, 6 * mib, 4096):
            m[i] = 0
        m[8 * mib:12 * mib] = os.urandom(4 * mib)
        want = hashlib.sha256(m[:12 * mib]).hexdigest()
        role, mine, theirs = "parent", 0, 8
        if os.fork() == 0:
            role, mine, theirs = "child", 8, 0
        n = 0
        while True:
            n += 1
            struct.pack_into("Q", m, 12 * mib + mine, n)
            other = struct.unpack_from("Q", m, 12 * mib + theirs)[0]
            ok = hashlib.sha256(m[:12 * mib]).hexdigest() == want
            tmp = "%s/%s.tmp" % (out, role)
            with open(tmp, "w") as f:
                f.write("%s %d %d\\n" % ("ok" if ok else "changed", n, other))
            os.rename(tmp, "%s/%s" % (out, role))
            time.sleep(0.1)
        """

    /// A role's last verdict: (bytes unchanged, its own count, the other's count it saw).
    func verdict(_ dir: TemporaryDirectory, _ role: String) -> (ok: Bool, n: Int, other: Int)? {
        guard let text = try? String(contentsOfFile: dir.filePath.appending(role).string, encoding: .utf8)
        else { return nil }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard f.count == 3, let n = Int(f[1]), let other = Int(f[2]) else { return nil }
        return (f[0] == "ok", n, other)
    }

    @Test func parentAndChild_shareTheSameBytes_afterTheRestore() throws {
        let dir = try TemporaryDirectory("zpck-shmem")
        let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
        let pid = try ChildProcess.spawn(
            "/usr/bin/setsid",
            arguments: ["/usr/bin/python3", "-c", Self.script, dir.filePath.string],
            stdin: devnull,
            stdout: devnull,
            stderr: devnull
        )
        var live = pid
        defer { killAndReap(live) }
        try #require(
            eventually(within: 30, every: 0.02) {
                (verdict(dir, "parent")?.other ?? 0) > 0 && (verdict(dir, "child")?.other ?? 0) > 0
            },
            "parent and child did not start sharing"
        )
        let child = try forkedChild(of: pid)
        let images = try TemporaryDirectory("zpck-shmem-img")
        try dumpForkedPair(root: pid, child: child, into: images)
        let before = (parent: try #require(verdict(dir, "parent")), child: try #require(verdict(dir, "child")))
        for role in ["parent", "child"] { _ = unlink(dir.filePath.appending(role).string) }

        var o = RestoreOptions()
        o.inheritedFiles = []
        live = try Checkpointer().restore(imagesDir: images.filePath, options: o).pid
        defer { kill(child, SIGKILL) }  // the restored child has its old pid; the root goes in the defer above
        // Each sees the other's counter go past where it stood at the dump: both write to one area.
        #expect(
            eventually(within: 30, every: 0.02) {
                (verdict(dir, "parent")?.other ?? 0) > before.child.n + 1
                    && (verdict(dir, "child")?.other ?? 0) > before.parent.n + 1
            },
            "parent \(String(describing: verdict(dir, "parent"))), child \(String(describing: verdict(dir, "child"))) after \(before)"
        )
        #expect(verdict(dir, "parent")?.ok == true, "the parent's bytes changed")
        #expect(verdict(dir, "child")?.ok == true, "the child's bytes changed")

        // How (CRIU's restore log, level 4; CRIU restores such an area as a memfd): the root task
        // filled it before the restore stage, its pages went into the memfd by sendfile.
        let log = try String(contentsOfFile: images.filePath.appending("restore.log").string, encoding: .utf8)
        let lines = log.split(separator: "\n")
        let summary = lines.filter { $0.contains("pages copied into its file") }
        print("shared memory restore: \(summary.map { String($0) })")
        #expect(summary.count == 1, "one shared area restored, with zeropod's CRIU build (make setup)")
        #expect(summary.first?.contains(" 0 pages copied") == false, "its pages went by sendfile")
        #expect(summary.first?.hasSuffix(" 0 read into its mapping") == true, "none read into its mapping")
        #expect(
            lines.contains { $0.contains("\(pid): ") && $0.contains("filled before the restore stage") },
            "the root task filled it before the restore stage"
        )
    }
}
