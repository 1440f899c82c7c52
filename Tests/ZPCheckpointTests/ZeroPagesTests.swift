import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Decision 0066: dumps leave the all-zero pages of private anonymous mappings out of the images
/// (`Checkpointer.leavesZeroPagesOut`, zeropod's CRIU build), and restores, full or lazy, give the
/// process the same memory: the zeroed buffer reads as zeros, the patterned one is unchanged.
@Suite("Zero pages left out of the images (decision 0066)", .serialized, .enabled(if: isRoot, "needs root for CRIU"))
struct ZeroPagesTests {
    /// A python HTTP server holding `zeroMiB` of touched, all-zero memory (every page written with
    /// a 0 byte, so it is present at the dump) and 4 MiB of random bytes; it answers
    /// "count=N zero=<1 when the zeroed buffer is still all zero> sum=<sha256 of the random bytes>".
    func script(port: UInt16, zeroMiB: Int) -> String {
        """
        import hashlib, os, socket
        zero = bytearray(\(zeroMiB) << 20)
        for i in range(0, len(zero), 4096):
            zero[i] = 0
        pattern = bytearray(os.urandom(4 << 20))
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
                z = 1 if zero == bytes(len(zero)) else 0
                b = ("count=%d zero=%d sum=%s" % (n, z, hashlib.sha256(pattern).hexdigest())).encode()
                c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(b) + b)
            finally:
                c.close()
        """
    }

    func start(netns: TestNetns, port: UInt16, zeroMiB: Int) throws -> Int32 {
        try startPythonServer(
            netns: netns,
            port: port,
            script: script(port: port, zeroMiB: zeroMiB),
            name: "zero-page server"
        )
    }

    /// The server's answer: (count, zeroed buffer still zero, checksum of the random bytes).
    func ask(netns: TestNetns, port: UInt16) throws -> (count: Int, zero: Bool, sum: String) {
        let r = try NetworkNamespace.httpGet(netns: netns.filePath, port: port)
        var fields: [Substring: Substring] = [:]
        for part in r.body.split(separator: " ") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        return (Int(fields["count"] ?? "") ?? -1, fields["zero"] == "1", String(fields["sum"] ?? ""))
    }

    /// Dumps the server (pid) into a fresh folder, with or without zero pages; waits for it to go.
    func dump(
        _ pid: Int32,
        netns: TestNetns,
        leavingZeroPagesOut: Bool,
        name: String
    ) throws -> (TemporaryDirectory, CRIUDumpStats?) {
        let images = try TemporaryDirectory(name)
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        let criu = Checkpointer(leavesZeroPagesOut: leavingZeroPagesOut)
        let d = try criu.dump(pid: pid, imagesDir: images.filePath, options: o)
        #expect(eventually(every: 0.01) { !isAlive(pid) }, "dumped process is gone")
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
        return (images, d.stats)
    }

    @Test func zeroPages_areLeftOut_andRestoresFullAndLazy_giveTheSameMemory() throws {
        let netns = try TestNetns("zpck-zero")
        let port: UInt16 = 8093
        let zeroMiB = 32
        let pid = try start(netns: netns, port: port, zeroMiB: zeroMiB)
        var live = pid
        defer { killAndReap(live) }
        let before = try ask(netns: netns, port: port)
        #expect(before.count == 2 && before.zero)  // the start's probe was the first

        // Once with every page (CRIU's own images), once without the zero pages.
        let (all, allStats) = try dump(pid, netns: netns, leavingZeroPagesOut: false, name: "zpck-zero-all")
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let criu = Checkpointer()
        live = try criu.restore(imagesDir: all.filePath, options: processRestoreOptions(netns: ns)).pid
        let afterAll = try ask(netns: netns, port: port)
        #expect(afterAll.count == 3 && afterAll.zero && afterAll.sum == before.sum)

        let (lean, leanStats) = try dump(live, netns: netns, leavingZeroPagesOut: true, name: "zpck-zero-lean")
        let allBytes = try pageImageBytes(all.filePath)
        let leanBytes = try pageImageBytes(lean.filePath)
        print(
            "zero pages: pages images \(allBytes >> 10) KiB with every page, "
                + "\(leanBytes >> 10) KiB without zero pages"
        )
        #expect(allBytes >= zeroMiB << 20, "CRIU's own images hold the touched zero pages")
        #expect(
            allBytes - leanBytes >= (zeroMiB - 1) << 20,
            "the zeroed \(zeroMiB) MiB are left out (needs zeropod's CRIU build: make setup)"
        )
        // CRIU's dump statistics count the pages the images hold.
        #expect(allStats.map { Int($0.pagesWritten) * 4096 } == allBytes)
        #expect(leanStats.map { Int($0.pagesWritten) * 4096 } == leanBytes)

        // A full restore of the lean images: same memory.
        live = try criu.restore(imagesDir: lean.filePath, options: processRestoreOptions(netns: ns)).pid
        let afterLean = try ask(netns: netns, port: port)
        #expect(afterLean.count == 4 && afterLean.zero && afterLean.sum == before.sum)
        killAndReap(live)

        // A lazy restore of the same images: the left-out pages are answered as zero pages.
        guard lazyPagesHere else { return }
        let daemon = try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: lean.filePath)
        defer { daemon.stop() }
        var o = processRestoreOptions(netns: ns)
        o.lazyPages = true
        live = try criu.restore(imagesDir: lean.filePath, options: o).pid
        let afterLazy = try ask(netns: netns, port: port)
        #expect(afterLazy.count == 4 && afterLazy.zero && afterLazy.sum == before.sum)
        #expect(daemon.waitForExit(timeout: .seconds(60)), "lazy-pages finished")
        #expect(daemon.termination == .exited(code: 0))
    }

    /// A forked child's zero pages where its parent's are not (and the reverse): the child's
    /// inherited copy of a page its image lacks must read as zeros after the restore. Parent and
    /// child check their buffers against the hashes they took before the dump, every 50 ms, and
    /// write the verdict to a file each.
    @Test func forkedChild_keepsItsOwnMemory_whenZeroPagesAreLeftOut() throws {
        let dir = try TemporaryDirectory("zpck-zero-fork")
        let script = """
            import hashlib, os, sys, time
            a = bytearray(8 << 20)
            for i in range(0, len(a), 4096):
                a[i] = 0
            b = bytearray(os.urandom(4 << 20))
            role = "parent"
            if os.fork() == 0:
                role = "child"
                b[:] = bytes(len(b))
                for i in range(0, len(a) // 2, 4096):
                    a[i] = 1
            h = lambda x: hashlib.sha256(x).hexdigest()
            want = (h(a), h(b))
            n = 0
            while True:
                n += 1
                ok = (h(a), h(b)) == want
                tmp = "\(dir.filePath)/%s.tmp" % role
                with open(tmp, "w") as f:
                    f.write("%s %d\\n" % ("ok" if ok else "changed", n))
                os.rename(tmp, "\(dir.filePath)/%s" % role)
                time.sleep(0.05)
            """
        let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
        let pid = try ChildProcess.spawn(
            "/usr/bin/setsid",
            arguments: ["/usr/bin/python3", "-c", script],
            stdin: devnull,
            stdout: devnull,
            stderr: devnull
        )
        var live = pid
        defer { killAndReap(live) }
        func verdict(_ role: String) -> String? {
            try? String(contentsOfFile: dir.filePath.appending(role).string, encoding: .utf8)
        }
        try #require(
            eventually(within: 30, every: 0.02) { verdict("parent") != nil && verdict("child") != nil },
            "parent and child did not start"
        )
        let child = try forkedChild(of: pid)
        let images = try TemporaryDirectory("zpck-zero-fork-img")
        try dumpForkedPair(root: pid, child: child, into: images)
        let bytes = try pageImageBytes(images.filePath)
        print("zero pages, forked child: \(bytes >> 10) KiB of pages in the images")
        #expect(bytes < 20 << 20, "the zero pages of both processes are left out: \(bytes >> 10) KiB of pages")
        for role in ["parent", "child"] { _ = unlink(dir.filePath.appending(role).string) }
        var o = RestoreOptions()
        o.inheritedFiles = []
        live = try Checkpointer(leavesZeroPagesOut: true).restore(imagesDir: images.filePath, options: o).pid
        #expect(
            eventually(within: 30, every: 0.02) { verdict("parent") != nil && verdict("child") != nil },
            "parent and child did not run again"
        )
        #expect(verdict("parent")?.hasPrefix("ok") == true, "parent: \(verdict("parent") ?? "-")")
        #expect(verdict("child")?.hasPrefix("ok") == true, "child: \(verdict("child") ?? "-")")
        // The restored child has its old pid; end it too (the root is ended by the defer).
        kill(child, SIGKILL)
    }

    @Test func spawn_passesTheEnvironmentEntries_andKeepsTheCallersOthers() throws {
        let output = try TemporaryDirectory("zpck-env")
        let file = output.filePath.appending("env")
        let out = SharedDescriptor(try OwnedDescriptor.open(file, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600))
        let pid = try ChildProcess.spawn(
            "/usr/bin/env",
            arguments: [],
            stdout: out,
            environment: ["ZEROPOD_TEST_ENTRY=7", "PATH=/zp-test"]
        )
        ChildProcess.wait(pid)
        let lines = try String(contentsOfFile: file.string, encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0 == "ZEROPOD_TEST_ENTRY=7" }.count == 1)
        #expect(lines.filter { $0.hasPrefix("PATH=") } == ["PATH=/zp-test"], "the entry replaces the inherited one")
        if let home = ProcessInfo.processInfo.environment["HOME"] {
            #expect(lines.contains { $0 == "HOME=\(home)" }, "the caller's other variables stay")
        }
    }

    @Test func workerEnvironment_setsTheVariableEitherWay() {
        #expect(
            Checkpointer(leavesZeroPagesOut: true).workerEnvironment == [
                "ZEROPOD_SKIP_ZERO_PAGES=1", "ZEROPOD_WP_TRACK=0",
            ]
        )
        // 0, not absent: a variable the shim inherited must not turn it on.
        #expect(Checkpointer().workerEnvironment == ["ZEROPOD_SKIP_ZERO_PAGES=0", "ZEROPOD_WP_TRACK=0"])
        #expect(
            Checkpointer(tracksWrites: true).workerEnvironment == ["ZEROPOD_SKIP_ZERO_PAGES=0", "ZEROPOD_WP_TRACK=1"]
        )
        // A dump's own entry for a name replaces the worker's: one entry per name.
        #expect(
            Checkpointer.environment(["A=1", "ZEROPOD_WP_TRACK=1"], overriddenBy: ["ZEROPOD_WP_TRACK=0", "B=2"])
                == ["A=1", "ZEROPOD_WP_TRACK=0", "B=2"]
        )
    }
}
