import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

@Suite("orphan pts master: CRIU hands a new pty master over SCM_RIGHTS", .enabled(if: isRoot, "needs root for CRIU"))
struct OrphanPtyTests {
    let criu = Checkpointer()

    /// Reads from `fd` until `needle` appears or 10 s pass.
    func read(_ fd: CInt, until needle: String) -> String {
        var text = ""
        let deadline = ContinuousClock.now + .seconds(10)
        var buf = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline && !text.contains(needle) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            text += String(decoding: buf[0..<n], as: UTF8.self)
        }
        return text
    }

    @Test func restoredProcess_onAPty_isReachableThroughTheMasterFromTheHook() throws {
        let master = try OwnedDescriptor.open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: CInt = 0
        var index: CInt = -1
        #expect(ioctl(master.rawValue, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0)
        #expect(ioctl(master.rawValue, 0x8004_5430 /* TIOCGPTN */, &index) == 0)
        let slavePath = "/dev/pts/\(index)"
        let slave = SharedDescriptor(try OwnedDescriptor.open(FilePath(slavePath), O_RDWR | O_NOCTTY))
        let script = "import sys\nfor line in sys.stdin:\n    sys.stdout.write('got:' + line)\n    sys.stdout.flush()\n"
        let pid = try ChildProcess.spawn(
            "/usr/bin/setsid",
            arguments: ["-c", "/usr/bin/python3", "-c", script],
            stdin: slave,
            stdout: slave,
            stderr: slave
        )
        slave.close()
        var live = pid
        defer { killAndReap(live) }
        try master.writeAll(Array("one\n".utf8))
        guard read(master.rawValue, until: "got:one").contains("got:one") else {
            try? master.close()
            Issue.record("the process does not answer on its pty")
            return
        }

        let dir = try TemporaryDirectory("zpck-pty-img")
        var dump = DumpOptions()
        dump.orphanPtsMaster = true
        _ = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump)
        _ = eventually(every: 0.01) { !isAlive(pid) }
        var st: Int32 = 0
        _ = waitpid(pid, &st, WNOHANG)
        // CRIU reopens the same pty index: free it by closing the old master.
        try master.close()

        var restore = RestoreOptions()
        restore.orphanPtsMaster = true
        var newMaster: SharedDescriptor?
        var hooks = CRIUHooks()
        hooks["orphan-pts-master"] = { note in
            // Taken over: the connection closes what the hook leaves behind.
            if let fd = note.receivedFD?.take() { newMaster = SharedDescriptor(fd) }
        }
        let r = try criu.restore(imagesDir: dir.filePath, options: restore, hooks: hooks)
        live = r.pid
        let m = try #require(newMaster, "the orphan-pts-master notification carried a descriptor")
        try m.withOwner { (fd) throws(SystemError) in try fd.writeAll(Array("two\n".utf8)) }
        let out = read(m.rawValue, until: "got:two")
        #expect(out.contains("got:two"), "the restored process answers through the new master: \(out.debugDescription)")
    }
}
