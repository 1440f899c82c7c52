import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Decision 0077: a full restore by a checkpointer that tracks writes leaves the restored memory
/// write-protected by an asynchronous userfaultfd, `WriteTracking` holds it, and a dump with the
/// restored images as parent (`dirtyFromWriteTracking`) writes only the pages written since; a restore
/// through the chain gives the process exactly the memory it had. Without the hold every page
/// counts as written (a full-size dump). Decision 0078: a pre-dump hands the same tracking over.
/// Real CRIU (zeropod's build, `make setup`), real processes.
@Suite(
    "Write tracking for incremental checkpoints (decision 0077)",
    .serialized,
    .enabled(if: isRoot, "needs root for CRIU")
)
struct WriteTrackingTests {
    let port: UInt16 = 8097
    let criu = Checkpointer(leavesZeroPagesOut: true, tracksWrites: true)

    /// A python HTTP server with `mebibytes` MiB of known bytes (page i: sha256 of "zp<i>",
    /// repeated) and, unless `forked`, an 8 TiB reservation without pages (as MariaDB has: an
    /// incremental restore must not premap it writable, which the kernel's overcommit check
    /// refuses; a forked child's inherited reservation is premapped writable by any CRIU restore,
    /// the full one too, and refused the same way: not what this test is about). Each request
    /// checks the memory against a replay of what it was given (the known bytes, then every
    /// earlier request's writes, 32 of 8 bytes each), page by page so that the check itself writes
    /// little memory, answers "count=N ok=<1 when equal>", then makes its own writes. `forked`: the
    /// server forks a child first, which holds its own copy (shared copy-on-write, then written
    /// apart) and is checked and written the same way over a pipe; ok is 1 when both are equal.
    /// `zeroMebibytes`: a second buffer of pages that are present but all zeros (each written
    /// once with a zero); request n then writes one byte into one of them, and each request checks
    /// the buffer (zero pages must come back as zeros, the written ones with their byte).
    func script(mebibytes: Int, forked: Bool, zeroMebibytes: Int = 0) -> String {
        """
        import ctypes, hashlib, os, socket, struct
        PAGES = \(mebibytes) * 256
        ZPAGES = \(zeroMebibytes) * 256
        zeros = bytearray(ZPAGES * 4096)
        for i in range(ZPAGES):
            zeros[i * 4096] = 0
        ZERO_PAGE = bytes(4096)
        def zcheck(n):
            want = {}
            for m in range(1, n):
                want[(m * 7) % ZPAGES] = m % 255 + 1
            zv = memoryview(zeros)
            for i in range(ZPAGES):
                page = zv[i * 4096:(i + 1) * 4096]
                if i in want:
                    if page[0] != want[i] or page[1:] != ZERO_PAGE[1:]:
                        return 0
                elif page != ZERO_PAGE:
                    return 0
            return 1
        libc = ctypes.CDLL(None)
        libc.mmap.restype = ctypes.c_void_p
        if not \(forked ? "True" : "False"):
            reserve = libc.mmap(None, ctypes.c_size_t(8 << 40), 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS
        def base(i):
            return hashlib.sha256(b"zp%d" % i).digest() * 128
        def writes(n, who):
            return [(((n * 1000003 + k * 7919 + who * 13) % PAGES) * 4096 + 8 * (n % 500),
                     struct.pack("<Q", n * 100000 + k + who)) for k in range(32)]
        data = bytearray(PAGES * 4096)
        for i in range(PAGES):
            data[i * 4096:(i + 1) * 4096] = base(i)
        def check(n, who):
            by_page = {}
            for m in range(1, n):
                for off, v in writes(m, who):
                    by_page.setdefault(off // 4096, []).append((off % 4096, v))
            mv = memoryview(data)
            for i in range(PAGES):
                page = base(i)
                if i in by_page:
                    p = bytearray(page)
                    for o, v in by_page[i]:
                        p[o:o + 8] = v
                    page = bytes(p)
                if mv[i * 4096:(i + 1) * 4096] != page:
                    return 0
            return 1
        def step(n, who):
            ok = check(n, who)
            if ZPAGES and who == 0:
                ok = ok and zcheck(n)
                zeros[((n * 7) % ZPAGES) * 4096] = n % 255 + 1
            for off, v in writes(n, who):
                data[off:off + 8] = v
            return ok
        child = None
        if \(forked ? "True" : "False"):
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            if os.fork() == 0:
                n = 0
                while True:
                    os.read(r1, 1)
                    n += 1
                    os.write(w2, b"1" if step(n, 1) else b"0")
            child = (w1, r2)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", \(port)))
        s.listen(64)
        n = 0
        while True:
            c, _ = s.accept()
            try:
                c.recv(4096)
                n += 1
                ok = step(n, 0)
                if child:
                    os.write(child[0], b"x")
                    ok = ok and os.read(child[1], 1) == b"1"
                b = ("count=%d ok=%d" % (n, 1 if ok else 0)).encode()
                c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(b) + b)
            finally:
                c.close()
        """
    }

    /// The server's answer: (count, memory as replayed).
    func ask(_ netns: TestNetns) throws -> (count: Int, ok: Bool) {
        let r = try NetworkNamespace.httpGet(netns: netns.filePath, port: port)
        var fields: [Substring: Substring] = [:]
        for part in r.body.split(separator: " ") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        return (Int(fields["count"] ?? "") ?? -1, fields["ok"] == "1")
    }

    /// Dumps `pid` into `folder` (with `parent`: incremental on it, dirty = written since the
    /// restore) and waits until it is gone and reaped.
    func dump(_ pid: Int32, netns: TestNetns, into folder: FilePath, parent: String?) throws {
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        if let parent {
            o.parentImages = parent
            o.trackMemory = true
            o.dirtyFromWriteTracking = true
        }
        _ = try criu.dump(pid: pid, imagesDir: folder, options: o)
        #expect(eventually(every: 0.01) { !isAlive(pid) }, "dumped process is gone")
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
        #expect(eventually(every: 0.01) { kill(pid, 0) != 0 }, "dumped process is reaped")
    }

    /// Prints the pages images' sizes of `parent` (a full dump or a pre-dump of the 24 MiB server)
    /// and of the dump `on` it, and expects the parent to hold the buffer and the dump on it a
    /// fraction of that. Returns the parent's size.
    func expectIncremental(_ dump: FilePath, on parent: FilePath, _ label: String) throws -> Int {
        let full = try pageImageBytes(parent)
        let incremental = try pageImageBytes(dump)
        print("\(label): pages images \(full >> 10) KiB parent, \(incremental >> 10) KiB the dump on it")
        #expect(full >= 24 << 20, "\(label): the parent holds the 24 MiB buffer")
        #expect(incremental * 4 < full, "\(label): the dump on the parent writes a fraction of the pages")
        return full
    }

    @Test func incrementalDumps_writeOnlyWhatChanged_andRestoreTheSameMemory() throws {
        let netns = try TestNetns("zpck-wp")
        let root = try TemporaryDirectory("zpck-wp")
        let (d1, d2, d3, d4) = (
            root.filePath.appending("d1"), root.filePath.appending("d2"),
            root.filePath.appending("d3"), root.filePath.appending("d4")
        )
        let pid = try startPythonServer(
            netns: netns,
            port: port,
            script: script(mebibytes: 24, forked: false),
            name: "write-tracking server"
        )
        var live = pid
        defer { killAndReap(live) }
        #expect(try ask(netns) == (2, true))  // the start's probe was the first

        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let tracking = WriteTracking()
        defer { tracking.release() }
        var hooks = CRIUHooks()
        hooks.holdingWriteTracking(in: tracking)

        // A full dump, a tracked restore: every process of the tree holds a userfaultfd.
        try dump(live, netns: netns, into: d1, parent: nil)
        live = try criu.restore(imagesDir: d1, options: processRestoreOptions(netns: ns), hooks: hooks).pid
        let summary = try #require(
            tracking.summary,
            "the restored process had a userfaultfd to hold (zeropod's CRIU build, kernel 6.7+)"
        )
        #expect(summary.root == live && summary.tracked == 1 && summary.processes == 1)
        #expect(try ask(netns) == (3, true), "the full restore gave the same memory")

        // An incremental dump on it writes only what changed since the restore.
        try dump(live, netns: netns, into: d2, parent: "../d1")
        tracking.release()
        let full = try expectIncremental(d2, on: d1, "write tracking")

        // A restore through the chain d2 → d1: the buffer is exactly what it was.
        live = try criu.restore(imagesDir: d2, options: processRestoreOptions(netns: ns), hooks: hooks).pid
        #expect(tracking.summary?.tracked == 1)
        #expect(try ask(netns) == (4, true), "the chain restored the same memory")

        // Again on the chain (d3 → d2 → d1).
        try dump(live, netns: netns, into: d3, parent: "../d2")
        tracking.release()
        #expect(try pageImageBytes(d3) * 4 < full)
        live = try criu.restore(imagesDir: d3, options: processRestoreOptions(netns: ns)).pid
        #expect(try ask(netns) == (5, true), "two parents deep, the same memory")

        // Restored without a hold: nothing is tracked, every page counts as written.
        try dump(live, netns: netns, into: d4, parent: "../d3")
        let untracked = try pageImageBytes(d4)
        print("write tracking: \(untracked >> 10) KiB when the restore was not held")
        #expect(untracked * 10 >= full * 9, "an untracked tree gets a full-size dump")
        live = try criu.restore(imagesDir: d4, options: processRestoreOptions(netns: ns)).pid
        #expect(try ask(netns) == (6, true))
    }

    @Test func forkedPair_bothProcessesTracked_andTheirMemoryComesBack() throws {
        let netns = try TestNetns("zpck-wp2")
        let root = try TemporaryDirectory("zpck-wp2")
        let (d1, d2, d3) = (root.filePath.appending("d1"), root.filePath.appending("d2"), root.filePath.appending("d3"))
        let pid = try startPythonServer(
            netns: netns,
            port: port,
            script: script(mebibytes: 8, forked: true),
            name: "forked write-tracking server"
        )
        var live = pid
        defer {
            for p in PreparedContainerRestore.processTree(live).reversed() { killAndReap(p) }
        }
        #expect(try ask(netns) == (2, true))
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let tracking = WriteTracking()
        defer { tracking.release() }
        var hooks = CRIUHooks()
        hooks.holdingWriteTracking(in: tracking)

        try dumpTree(live, netns: netns, into: d1, parent: nil)
        live = try criu.restore(imagesDir: d1, options: processRestoreOptions(netns: ns), hooks: hooks).pid
        #expect(
            tracking.summary?.tracked == 2 && tracking.summary?.processes == 2,
            "\(String(describing: tracking.summary))"
        )
        #expect(try ask(netns) == (3, true), "both processes' memory after the full restore")

        try dumpTree(live, netns: netns, into: d2, parent: "../d1")
        tracking.release()
        let full = try pageImageBytes(d1)
        let incremental = try pageImageBytes(d2)
        print("write tracking, forked pair: pages images \(full >> 10) KiB full, \(incremental >> 10) KiB incremental")
        #expect(incremental * 3 < full, "the incremental dump of both writes a fraction of the pages")
        live = try criu.restore(imagesDir: d2, options: processRestoreOptions(netns: ns), hooks: hooks).pid
        #expect(try ask(netns) == (4, true), "both processes' memory through the chain")

        try dumpTree(live, netns: netns, into: d3, parent: "../d2")
        tracking.release()
        live = try criu.restore(imagesDir: d3, options: processRestoreOptions(netns: ns)).pid
        #expect(try ask(netns) == (5, true), "two parents deep")
    }

    /// Dumps the tree of `pid` (with `parent`: incremental on it) and waits until all of it is gone.
    func dumpTree(_ pid: Int32, netns: TestNetns, into folder: FilePath, parent: String?) throws {
        let tree = PreparedContainerRestore.processTree(pid)
        try dump(pid, netns: netns, into: folder, parent: parent)
        #expect(
            eventually(every: 0.01) {
                for p in tree {
                    var status: Int32 = 0
                    _ = waitpid(p, &status, WNOHANG)
                }
                return tree.allSatisfy { kill($0, 0) != 0 }
            },
            "the whole dumped tree is gone"
        )
    }

    /// Decision 0078: without soft-dirty, a pre-dump of a checkpointer that tracks writes hands its
    /// task's userfaultfd over; while held, the dump on the pre-dump writes only what changed, and
    /// a lazy restore reads through the chain (its lazy-pages daemon serves the parent's pages).
    /// The pre-dump leaves zero pages out, the dump on it the unwritten ones its parent lacks: they
    /// come back as zeros, and a zero page written since comes back with what was written.
    @Test(.enabled(if: lazyPagesHere, "CRIU reports no lazy_pages support (userfaultfd) on this kernel"))
    func trackedPreDump_makesTheDumpOnItIncremental_andALazyRestoreReadsThroughIt() throws {
        #expect(criu.preDumpsTrackWrites(), "zeropod's CRIU build (make setup) holds the pre-dump tracking patch")
        let netns = try TestNetns("zpck-wp3")
        let root = try TemporaryDirectory("zpck-wp3")
        let (pre, d1, d2) = (
            root.filePath.appending("pre"), root.filePath.appending("d1"), root.filePath.appending("d2")
        )
        let pid = try startPythonServer(
            netns: netns,
            port: port,
            script: script(mebibytes: 24, forked: false, zeroMebibytes: 16),
            name: "pre-dump write-tracking server"
        )
        var live = pid
        defer { killAndReap(live) }
        #expect(try ask(netns) == (2, true))

        let tracking = WriteTracking()
        defer { tracking.release() }
        var hooks = CRIUHooks()
        hooks.holdingPreDumpTracking(in: tracking, treeAt: live)
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try criu.preDump(pid: live, imagesDir: pre, options: o, hooks: hooks)
        let summary = try #require(tracking.summary, "the pre-dump handed its task's userfaultfd over")
        #expect(summary.root == live && summary.tracked == 1 && summary.processes == 1)
        #expect(try ask(netns) == (3, true), "the process runs on after the pre-dump, memory intact")

        try dump(live, netns: netns, into: d1, parent: "../pre")
        tracking.release()
        let full = try expectIncremental(d1, on: pre, "pre-dump write tracking")
        #expect(full < 36 << 20, "the pre-dump leaves the 16 MiB of zero pages out")

        // A lazy restore of d1 → pre: the request checks every page, faulted in through the chain.
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        var lazy = processRestoreOptions(netns: ns)
        lazy.lazyPages = true
        let daemon = try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: d1)
        defer { daemon.stop() }
        live = try criu.restore(imagesDir: d1, options: lazy).pid
        #expect(try ask(netns) == (4, true), "the lazy restore through the pre-dump gave the same memory")
        #expect(daemon.waitForExit(timeout: .seconds(60)), "the lazy-pages daemon served every page and ended")
        #expect(daemon.termination == .exited(code: 0), "\(String(describing: daemon.termination))")
        // The parent's pages went through the daemon (lazily), not into the restore up front.
        let log = String(decoding: try Files.read(daemon.logPath), as: UTF8.self)
        let transferred = log.split(separator: "\n").compactMap { line -> Int? in
            guard let r = line.firstRange(of: "UFFD transferred pages: (") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        print("pre-dump write tracking: the lazy-pages daemon transferred \(transferred) pages")
        #expect(transferred >= 24 * 256, "the 24 MiB buffer, in the pre-dump's images, was served lazily")

        // Untracked pre-dump (no hold): the dump on it is full-size, and a full restore reads it.
        _ = try criu.preDump(pid: live, imagesDir: root.filePath.appending("pre2"), options: o)
        try dump(live, netns: netns, into: d2, parent: "../pre2")
        #expect(try pageImageBytes(d2) * 10 >= full * 9, "without the hold every page counts as written")
        live = try criu.restore(imagesDir: d2, options: processRestoreOptions(netns: ns)).pid
        #expect(try ask(netns) == (5, true))
    }

    @Test func holdingNothing_isNotAnError() throws {
        let tracking = WriteTracking()
        #expect(tracking.take(treeAt: getpid()) == nil, "the test process has no userfaultfd")
        #expect(tracking.summary == nil && !tracking.holdsRunningTree)
        tracking.release()
    }
}
