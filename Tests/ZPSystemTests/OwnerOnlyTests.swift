import SystemPackage
import Testing

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Owner-only folders and a umask for one thread (issue 15: images, sockets and registries that no
/// other user may read, from creation).
@Suite struct OwnerOnlyTests {
    private func scratch(_ name: String) -> String {
        "/tmp/zpsystem-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Every folder it creates is 0700 even under umask 022; an existing world-readable last folder
    /// becomes 0700; an existing parent is left alone; a file in the way is refused.
    @Test func makeOwnerOnlyDirectory_createsEveryMissingFolder0700() throws {
        let root = scratch("owner")
        defer { system("rm -rf '\(root)'") }
        let old = umask(0o022)
        defer { umask(old) }
        #expect(mkdir(root, 0o755) == 0)
        try Files.makeOwnerOnlyDirectory(FilePath(root + "/a/b/c"))
        #expect(try Files.permissions(of: FilePath(root)) == 0o755, "an existing parent is not changed")
        for path in [root + "/a", root + "/a/b", root + "/a/b/c"] {
            #expect(try Files.permissions(of: FilePath(path)) == 0o700, "\(path)")
        }
        #expect(mkdir(root + "/open", 0o755) == 0)
        try Files.makeOwnerOnlyDirectory(FilePath(root + "/open"))
        #expect(try Files.permissions(of: FilePath(root + "/open")) == 0o700)
        try Files.write(FilePath(root + "/file"), Array("x".utf8))
        #expect { try Files.makeOwnerOnlyDirectory(FilePath(root + "/file")) } throws: { error in
            (error as? SystemError)?.errno == .notDirectory
        }
    }

    /// The thread's own umask applies to what it creates and nowhere else: the process keeps its.
    @Test func runOnNewThread_withFileCreationMask_isThatThreadsAlone() throws {
        let root = scratch("mask")
        defer { system("rm -rf '\(root)'") }
        let old = umask(0o022)
        defer { umask(old) }
        #expect(mkdir(root, 0o755) == 0)
        let seen = try Threads.runOnNewThread(fileCreationMask: 0o077) { () -> mode_t in
            let fd = open(root + "/inside", O_CREAT | O_WRONLY, 0o666)
            close(fd)
            let mine = umask(0o077)
            return mine
        }
        #expect(seen == 0o077)
        #expect(try Files.permissions(of: FilePath(root + "/inside")) == 0o600)
        let fd = open(root + "/outside", O_CREAT | O_WRONLY, 0o666)
        close(fd)
        #expect(try Files.permissions(of: FilePath(root + "/outside")) == 0o644, "the process's umask is still 022")
        let now = umask(0o022)
        #expect(now == 0o022)
    }
}

/// Threads started by ``Threads`` carry a name of their own: a new thread would otherwise inherit
/// its creator's (`comm`), and pass for one of the creator's pool (a shim's NIO pool threads are
/// counted by name in ShimThreadsTests).
@Suite struct ThreadNameTests {
    private func comm() -> String {
        var buffer = [UInt8](repeating: 0, count: 32)
        let fd = open("/proc/thread-self/comm", O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let n = read(fd, &buffer, buffer.count)
        return String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }

    @Test func newThreads_areNamedZPThread_joinedAndUmaskOnesAlike() throws {
        #expect(try Threads.runOnNewThread { comm() } == Threads.threadName)
        #expect(try Threads.runOnNewThread(fileCreationMask: 0o077) { comm() } == Threads.threadName)
        #expect(Threads.threadName == "zp-thread")
    }
}
