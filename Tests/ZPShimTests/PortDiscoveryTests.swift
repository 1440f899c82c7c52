import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// The listeners of a network namespace from a socket diagnostics dump (listeners only), against
/// what the namespace's `/proc` tables print: the same sockets, and nothing but listeners.
@Suite struct PortDiscoveryTests {
    @Test(.enabled(if: Privileges.isRoot, "needs root: a network namespace"))
    func dumpedListeners_areTheTablesListeners() throws {
        let netns = try TestNetns("zppd")
        defer { netns.delete() }
        // Inside the namespace: an IPv4 and an IPv6 listener, one connection queued on the first
        // (connected, not accepted), and the tables as the namespace's own thread reads them.
        let made = try netns.run { () throws -> Made in
            let v4 = try listener(ipv6: false)
            let v6 = try listener(ipv6: true)
            let (client, connected) = connectToLoopback(port: v4.port)
            let tables = PortDiscovery.tableListeners(at: "/proc/thread-self/net")
            return Made(
                v4: v4,
                v6: v6,
                client: client,
                connected: connected,
                tables: tables.map { Pair($0.0, $0.1) }
            )
        }
        defer { for fd in [made.v4.fd, made.v6.fd, made.client] { close(fd) } }
        #expect(made.connected)
        let dumped = try PortDiscovery.dumpedListeners(in: NetworkNamespace(path: netns.filePath)).map {
            Pair($0.0, $0.1)
        }
        let expected: Set = [Pair(made.v4.port, made.v4.inode), Pair(made.v6.port, made.v6.inode)]
        #expect(Set(dumped) == expected, "dumped \(dumped)")
        #expect(Set(made.tables) == expected, "tables \(made.tables)")
        #expect(dumped.count == 2)
        // The host's namespace is another one: neither socket is there.
        let host = try PortDiscovery.dumpedListeners(in: NetworkNamespace(path: FilePath("/proc/self/ns/net")))
        #expect(!host.contains { expected.contains(Pair($0.0, $0.1)) })
    }

    @Test(.enabled(if: Privileges.isRoot, "needs root: a network namespace, pidfd_getfd"))
    func connections_areTheTreesConnectedSockets() throws {
        let netns = try TestNetns("zppc")
        defer { netns.delete() }
        // In the namespace: a listener, a client connected to it and the accepted end, all held
        // by this process (the tree's root here).
        let made = try netns.run { () throws -> [Int32] in
            let server = try listener(ipv6: false)
            let (client, connected) = connectToLoopback(port: server.port)
            guard connected else { throw SocketFailure(description: "connect: errno \(errno)") }
            let accepted = accept(server.fd, nil, nil)
            return [server.fd, client, accepted, Int32(server.port)]
        }
        defer { for fd in made.prefix(3) { close(fd) } }
        let port = UInt16(made[3])
        var named = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &named) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(made[1], $0, &length) }
        }
        let clientPort = UInt16(bigEndian: named.sin_port)
        let loopback = IPAddress("127.0.0.1")!
        let found = PortDiscovery.connections(ofTreeAt: getpid())
        let ours = found.filter { $0.localPort == port || $0.localPort == clientPort }
        #expect(
            Set(ours)
                == [
                    TCPConnectionTuple(local: loopback, localPort: port, remote: loopback, remotePort: clientPort),
                    TCPConnectionTuple(local: loopback, localPort: clientPort, remote: loopback, remotePort: port),
                ],
            "found \(found)"
        )
        // The listener is no connection, and nothing is listed twice.
        #expect(Set(found).count == found.count)
    }

    @Test func dumpedListeners_nameTheNamespaceThatCannotBeJoined() {
        let missing = NetworkNamespace(path: FilePath("/var/run/netns/zp-no-such-namespace"))
        #expect {
            _ = try PortDiscovery.dumpedListeners(in: missing)
        } throws: { error in
            "\(error)".contains("zp-no-such-namespace")
        }
        // The fallback reads nothing from a folder without tables.
        #expect(PortDiscovery.tableListeners(at: "/var/run/netns/zp-no-such-namespace").isEmpty)
    }
}

private struct Pair: Hashable, Sendable, CustomStringConvertible {
    var port: UInt16
    var inode: UInt64
    init(_ port: UInt16, _ inode: UInt64) {
        self.port = port
        self.inode = inode
    }
    var description: String { "\(port)/\(inode)" }
}

private struct Listener: Sendable {
    var fd: Int32
    var port: UInt16
    var inode: UInt64
}

private struct Made: Sendable {
    var v4: Listener
    var v6: Listener
    var client: Int32
    var connected: Bool
    var tables: [Pair]
}

private struct SocketFailure: Error, CustomStringConvertible {
    var description: String
}

/// A TCP client connected to 127.0.0.1:`port`: its descriptor, and whether `connect` succeeded.
private func connectToLoopback(port: UInt16) -> (Int32, Bool) {
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    return (client, connected == 0)
}

/// A TCP listener on loopback with a port the kernel picks.
private func listener(ipv6: Bool) throws -> Listener {
    let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketFailure(description: "socket: errno \(errno)") }
    var storage = sockaddr_storage()
    var length: socklen_t
    if ipv6 {
        var a = sockaddr_in6()
        a.sin6_family = sa_family_t(AF_INET6)
        a.sin6_addr = in6addr_loopback
        withUnsafeBytes(of: a) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
        length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    } else {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        withUnsafeBytes(of: a) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
        length = socklen_t(MemoryLayout<sockaddr_in>.size)
    }
    let bound = withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0, listen(fd, 16) == 0 else {
        close(fd)
        throw SocketFailure(description: "bind/listen: errno \(errno)")
    }
    var named = sockaddr_storage()
    var namedLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &named) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &namedLength) }
    }
    let port = withUnsafeBytes(of: named) { UInt16($0[2]) << 8 | UInt16($0[3]) }  // sin_port / sin6_port
    var info = stat()
    fstat(fd, &info)
    return Listener(fd: fd, port: port, inode: UInt64(info.st_ino))
}
