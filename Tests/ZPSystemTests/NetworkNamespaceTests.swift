import SystemPackage
import Testing
import ZPTestSupport

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The network namespace inode of the calling thread.
private func currentThreadNamespace() throws -> UInt64 {
    try Files.inode(of: "/proc/thread-self/ns/net")
}

/// The inode of the network namespace a socket belongs to (ioctl SIOCGSKNS opens it).
private func socketNamespace(_ fd: CInt) throws -> UInt64 {
    let ns = OwnedDescriptor(adopting: try systemCall("ioctl(SIOCGSKNS)") { ioctl(fd, 0x894C) })
    var st = stat()
    try systemCall("fstat") { fstat(ns.rawValue, &st) }
    return UInt64(st.st_ino)
}

@Suite(.serialized, .enabled(if: Privileges.isRoot, "creating network namespaces needs root"))
struct NetworkNamespaceTests {
    let name = "zpsys-\(getpid())"

    @Test func perform_runsInsideTheNamespace_andLeavesTheCallerWhereItWas() throws {
        try sh(["ip", "netns", "add", name])
        defer { _ = try? sh(["ip", "netns", "delete", name]) }
        let namespace = NetworkNamespace(path: FilePath("/run/netns/\(name)"))
        let before = try currentThreadNamespace()
        let inside = try namespace.perform { try? currentThreadNamespace() }
        #expect(inside == (try namespace.inode()))
        #expect(inside != before)
        #expect(try currentThreadNamespace() == before)

        let socket = try namespace.makeTCPSocket(ipv6: true)
        #expect(try socketNamespace(socket.rawValue) == (try namespace.inode()))
    }

    @Test func performInNewNamespace_getsAFreshOne() throws {
        let host = try currentThreadNamespace()
        let fresh = try NetworkNamespace.performInNewNamespace { try? currentThreadNamespace() }
        #expect(fresh != nil && fresh != host)
        #expect(try currentThreadNamespace() == host)
    }

    @Test func perform_onAMissingNamespace_throwsNamingThePath() {
        let path = "/run/netns/zpsys-missing-\(getpid())"
        #expect(throws: SystemError(call: "open", subject: path, errno: .noSuchFileOrDirectory)) {
            try NetworkNamespace(path: FilePath(path)).perform { 1 }
        }
    }
}

@Suite struct ThreadTests {
    @Test func runOnNewThread_returnsTheValue_fromAnotherThread() throws {
        let caller = pthread_self()
        let (value, sameThread) = try Threads.runOnNewThread { (7, pthread_equal(pthread_self(), caller) != 0) }
        #expect(value == 7)
        #expect(!sameThread)
    }
}
