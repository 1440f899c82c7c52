import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import Testing
import ZPSystem

@testable import ZPShim

#if canImport(Glibc)
import Glibc
#endif

// The shim's page relays of a live migration (decision 0063): between the host's loopback (where
// CRIU's page server and `criu lazy-pages` speak TCP) and the container's page socket in the run
// folder (where the node's manager, in its pod's network namespace, listens or dials). An echo
// server stands in for CRIU's page server and for the manager's proxy.

/// An echo server (TCP on 127.0.0.1 or a unix socket) counting its connections and their ends.
private final class EchoServer: Sendable {
    let channel: any Channel
    private let counts: Counts
    var port: Int { channel.localAddress?.port ?? 0 }
    var accepted: Int { counts.value.withLock { $0.accepted } }
    var ended: Int { counts.value.withLock { $0.ended } }

    init(unixPath: String? = nil) async throws {
        let counts = Counts()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                counts.value.withLock { $0.accepted += 1 }
                child.closeFuture.whenComplete { _ in counts.value.withLock { $0.ended += 1 } }
                return child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Echo()) }
            }
        if let unixPath {
            channel = try await bootstrap.bind(unixDomainSocketPath: unixPath, cleanupExistingSocketFile: true).get()
        } else {
            channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        }
        self.counts = counts
    }
}

private final class Counts: Sendable {
    let value = Mutex((accepted: 0, ended: 0))
}

private final class Echo: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

/// A blocking client socket connected to 127.0.0.1:`port` or to the unix socket `path`.
private func connectClient(port: Int? = nil, path: String? = nil) throws -> Int32 {
    if let port {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        return fd
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, byte) in (path ?? "").utf8.enumerated() where i < raw.count - 1 { raw[i] = byte }
    }
    let r = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard r == 0 else {
        close(fd)
        throw POSIXError(.ECONNREFUSED)
    }
    return fd
}

/// Sends `bytes` on `fd` and reads as many back (blocking, 10 s receive timeout), then closes it.
private func roundTrip(_ fd: Int32, _ bytes: [UInt8]) -> [UInt8] {
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var received: [UInt8] = []
    var sent = 0
    while received.count < bytes.count {
        if sent < bytes.count {
            let n = bytes[sent...].prefix(65536).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { break }
            sent += n
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let r = recv(fd, &buffer, buffer.count, sent < bytes.count ? Int32(MSG_DONTWAIT) : 0)
        if r > 0 { received += buffer[0..<r] } else if r == 0 { break } else if sent >= bytes.count { break }
    }
    return received
}

/// Waits up to `seconds` for `condition`.
private func eventually(within seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

@Suite struct PageRelayTests {
    static let logger = Logger(label: "page-relay-test")

    private func scratch() throws -> String {
        let folder = "/tmp/zprelay-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    /// The source's relay: the manager's connection to the page socket reaches CRIU's page server
    /// on loopback (4 MiB both ways); the socket is owner-only in an owner-only folder, one-shot,
    /// and gone once the connection ended.
    @Test func source_unixSocketToLoopback_carriesBytes_oneShot_socketRemoved() async throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let backend = try await EchoServer()
        defer { backend.channel.close(promise: nil) }
        let socket = folder + "/p/" + String(repeating: "a", count: 64) + ".sock"
        let relay = try await PageRelay.start(
            group: MultiThreadedEventLoopGroup.singleton,
            listen: .unix(path: socket),
            backend: .loopback(port: backend.port),
            timeout: .seconds(60),
            logger: Self.logger
        )
        #expect(try Files.permissions(of: FilePath(folder + "/p")) == 0o700)
        #expect(try Files.permissions(of: FilePath(socket)) == 0o600)
        let bytes = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let fd = try connectClient(path: socket)
        let echoed = roundTrip(fd, bytes)
        #expect(echoed == bytes)
        try await relay.closedFuture.get()
        #expect(!FileManager.default.fileExists(atPath: socket))
        #expect(backend.accepted == 1)
        #expect(await eventually(within: 10) { backend.ended == 1 })
        #expect(throws: (any Error).self) { _ = try connectClient(path: socket) }
    }

    /// A manager that closes its unused proxy connects and hangs up at once: the relay reaches
    /// CRIU's page server and hangs up too (CRIU takes that as the end of the transfer).
    @Test func source_hangUpAtOnce_endsTheBackendConnection() async throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let backend = try await EchoServer()
        defer { backend.channel.close(promise: nil) }
        let socket = folder + "/p/release.sock"
        let relay = try await PageRelay.start(
            group: MultiThreadedEventLoopGroup.singleton,
            listen: .unix(path: socket),
            backend: .loopback(port: backend.port),
            timeout: .seconds(60),
            logger: Self.logger
        )
        close(try connectClient(path: socket))
        #expect(await eventually(within: 10) { backend.accepted == 1 && backend.ended == 1 })
        try await relay.closedFuture.get()
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    /// The target's relay: `criu lazy-pages` on loopback reaches the manager's page socket; a
    /// relay closed unused removes nothing it does not own and refuses later clients.
    @Test func target_loopbackToUnixSocket_carriesBytes_thenCloses() async throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let socket = folder + "/manager.sock"
        let backend = try await EchoServer(unixPath: socket)
        defer { backend.channel.close(promise: nil) }
        let relay = try await PageRelay.start(
            group: MultiThreadedEventLoopGroup.singleton,
            listen: .loopback(port: 0),
            backend: .unix(path: socket),
            timeout: .seconds(60),
            logger: Self.logger
        )
        #expect(relay.port > 0)
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let echoed = roundTrip(try connectClient(port: relay.port), bytes)
        #expect(echoed == bytes)
        try await relay.closedFuture.get()
        #expect(FileManager.default.fileExists(atPath: socket))
        // Closed: a later client is refused, or (the freed loopback port may already be another
        // test's listener when tests run in parallel: a refused connect alone was flaky) at least
        // never reaches the echoing backend.
        if let late = try? connectClient(port: relay.port) {
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(late, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var byte: UInt8 = 42
            _ = send(late, &byte, 1, Int32(MSG_NOSIGNAL))
            var echo: UInt8 = 0
            #expect(recv(late, &echo, 1, 0) != 1, "a client after the close reached the echoing backend")
            close(late)
        }
        #expect(backend.accepted == 1)
    }

    /// The target's relay when the manager is gone (its socket refuses): the client is hung up on
    /// (the lazy-pages daemon then ends, and the restore is stopped, decision 0062).
    @Test func target_managerGone_clientIsHungUpOn() async throws {
        let folder = try scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let relay = try await PageRelay.start(
            group: MultiThreadedEventLoopGroup.singleton,
            listen: .loopback(port: 0),
            backend: .unix(path: folder + "/nobody.sock"),
            timeout: .seconds(60),
            logger: Self.logger
        )
        defer { relay.close() }
        let fd = try connectClient(port: relay.port)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let r = recv(fd, &byte, 1, 0)
        close(fd)
        #expect(r == 0)
    }
}
