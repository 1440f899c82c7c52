import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import ZPTestSupport

@testable import ZPManager

#if canImport(Glibc)
import Glibc
#endif

// The live migration's page-server proxies (decision 0058): the source's mutual-TLS proxy in front
// of a loopback backend (CRIU's page server there; an echo server here), the target's loopback
// proxy dialling it with the node's client TLS. Bytes go through both ways; a peer without a valid
// certificate is refused before the backend is reached and does not use up the one shot.

/// An echo server on 127.0.0.1 counting its connections.
private final class EchoServer: Sendable {
    let channel: any Channel
    private let count: Counter
    var port: Int { channel.localAddress?.port ?? 0 }
    var accepted: Int { count.value.withLock { $0 } }

    init() async throws {
        let count = Counter()
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                count.value.withLock { $0 += 1 }
                return child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.count = count
    }
}

private final class Counter: Sendable {
    let value = Mutex(0)
}

private final class Texts: Sendable {
    let all = Mutex<[String]>([])
}

private final class Echo: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

/// Sends `bytes` to 127.0.0.1:`port` over plain TCP and reads as many back (blocking).
private func roundTrip(port: Int, _ bytes: [UInt8]) throws -> [UInt8] {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
    var received: [UInt8] = []
    var sent = 0
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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

/// Sends `bytes` to the unix socket `path` and reads as many back (blocking).
private func unixRoundTrip(path: String, _ bytes: [UInt8]) throws -> [UInt8] {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, byte) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
    var received: [UInt8] = []
    var sent = 0
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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

@Suite struct PageServerProxyTests {
    static let ca = try! NodeCertificateAuthority.generate()
    static let logger = Logger(label: "page-proxy-test")

    /// Both proxies chained as a live migration uses them: 4 MiB echo through loopback → TLS →
    /// loopback; both end once the client closes.
    @Test func chainedProxies_carryBytesBothWays_thenEnd() async throws {
        let backend = try await EchoServer()
        defer { backend.channel.close(promise: nil) }
        let sourceTLS = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.1"))
        let targetTLS = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
        let group = MultiThreadedEventLoopGroup.singleton
        let source = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: sourceTLS,
            backend: .init(endpoint: .tcp(host: "127.0.0.1", port: backend.port), tls: nil),
            timeout: .seconds(60),
            logger: Self.logger
        )
        let target = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: nil,
            backend: .init(endpoint: .tcp(host: "127.0.0.1", port: source.port), tls: targetTLS),
            timeout: .seconds(60),
            logger: Self.logger
        )
        let bytes = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let port = target.port
        let echoed = try await onThread { try roundTrip(port: port, bytes) }
        #expect(echoed.count == bytes.count)
        #expect(echoed == bytes)
        try await source.finished.get()
        try await target.finished.get()
        #expect(backend.accepted == 1)
    }

    /// A peer without a client certificate is refused by the source proxy before it connects to
    /// the backend (CRIU's page server would take its EOF as the end of the transfer and kill the
    /// source's processes); the one shot stays for the real target.
    @Test func peerWithoutCertificate_neverReachesTheBackend() async throws {
        let backend = try await EchoServer()
        defer { backend.channel.close(promise: nil) }
        let sourceTLS = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.1"))
        let group = MultiThreadedEventLoopGroup.singleton
        let source = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: sourceTLS,
            backend: .init(endpoint: .tcp(host: "127.0.0.1", port: backend.port), tls: nil),
            timeout: .seconds(60),
            logger: Self.logger
        )
        defer { source.close() }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.verifySignatureAlgorithms = [.ed25519]
        configuration.certificateVerification = .none
        let context = try NIOSSLContext(configuration: configuration)
        let errors = Texts()
        let stranger = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: nil)
                    )
                    try channel.pipeline.syncOperations.addHandler(ErrorRecorder(errors: errors))
                }
            }
            .connect(host: "127.0.0.1", port: source.port).get()
        try? await stranger.writeAndFlush(ByteBuffer(bytes: [1, 2, 3, 4])).get()
        try await stranger.closeFuture.get()
        print("page proxy refusal, no client certificate — the peer sees: \(errors.all.withLock { $0 })")
        #expect(backend.accepted == 0, "the refused peer reached the backend")
        // The real target still gets through.
        let targetTLS = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
        let target = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: nil,
            backend: .init(endpoint: .tcp(host: "127.0.0.1", port: source.port), tls: targetTLS),
            timeout: .seconds(60),
            logger: Self.logger
        )
        let port = target.port
        let echoed = try await onThread { try roundTrip(port: port, Array("pages".utf8)) }
        #expect(echoed == Array("pages".utf8))
        #expect(backend.accepted == 1)
    }

    /// Peers with a certificate the cluster's CA did not sign (trusting ours), or with an expired
    /// one it did sign, are refused in the handshake too: the backend is never reached, and the
    /// real target still gets through afterwards.
    @Test(arguments: ["another CA", "expired"])
    func peerWithInvalidCertificate_neverReachesTheBackend(kind: String) async throws {
        let backend = try await EchoServer()
        defer { backend.channel.close(promise: nil) }
        let sourceTLS = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.1"))
        let group = MultiThreadedEventLoopGroup.singleton
        let source = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: sourceTLS,
            backend: .init(endpoint: .tcp(host: "127.0.0.1", port: backend.port), tls: nil),
            timeout: .seconds(60),
            logger: Self.logger
        )
        defer { source.close() }
        let credentials: NodeCredentials
        if kind == "expired" {
            credentials = try Self.ca.issueLeaf(ipAddress: "127.0.0.5", now: Date() - 7200, validity: 3600)
        } else {
            let forged = try NodeCertificateAuthority.generate().issueLeaf(ipAddress: "127.0.0.5")
            credentials = NodeCredentials(
                caCertificatePEM: Self.ca.certificatePEM,
                certificatePEM: forged.certificatePEM,
                privateKeyPEM: forged.privateKeyPEM
            )
        }
        let strangerTLS = try NodeTLS(credentials: credentials)
        let errors = Texts()
        let stranger = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try strangerTLS.prepareClient(channel)
                    try channel.pipeline.syncOperations.addHandler(ErrorRecorder(errors: errors))
                }
            }
            .connect(host: "127.0.0.1", port: source.port).get()
        try? await stranger.writeAndFlush(ByteBuffer(bytes: [1, 2, 3, 4])).get()
        try await stranger.closeFuture.get()
        print("page proxy refusal, \(kind) — the peer sees: \(errors.all.withLock { $0 })")
        #expect(!errors.all.withLock { $0 }.isEmpty, "the peer saw no error")
        #expect(backend.accepted == 0, "the refused peer reached the backend")
        let target = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: nil,
            backend: .init(
                endpoint: .tcp(host: "127.0.0.1", port: source.port),
                tls: try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
            ),
            timeout: .seconds(60),
            logger: Self.logger
        )
        let port = target.port
        let echoed = try await onThread { try roundTrip(port: port, Array("pages".utf8)) }
        #expect(echoed == Array("pages".utf8))
        #expect(backend.accepted == 1)
    }

    /// The chain as decision 0063 arranges it on two nodes: the source proxy's backend is the
    /// shim's page socket (a unix echo server here), the target proxy listens on the new
    /// container's page socket (mode 0600, removed once its one client is taken).
    @Test func unixEndpoints_sourceBackendAndTargetListener_carryBytes_socketRemoved() async throws {
        let folder = "/tmp/zpproxy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let group = MultiThreadedEventLoopGroup.singleton
        let backendPath = folder + "/source.sock"
        let backend = try await ServerBootstrap(group: group)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(unixDomainSocketPath: backendPath, cleanupExistingSocketFile: true).get()
        defer { backend.close(promise: nil) }
        let source = try await PageServerProxy.start(
            group: group,
            listen: .tcp(host: "127.0.0.1", port: 0),
            serverTLS: try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.1")),
            backend: .init(endpoint: .unix(path: backendPath), tls: nil),
            timeout: .seconds(60),
            logger: Self.logger
        )
        let targetPath = folder + "/target.sock"
        let target = try await PageServerProxy.start(
            group: group,
            listen: .unix(path: targetPath),
            serverTLS: nil,
            backend: .init(
                endpoint: .tcp(host: "127.0.0.1", port: source.port),
                tls: try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
            ),
            timeout: .seconds(60),
            logger: Self.logger
        )
        var info = stat()
        #expect(stat(targetPath, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 11) }
        let echoed = try await onThread { try unixRoundTrip(path: targetPath, bytes) }
        #expect(echoed == bytes)
        try await source.finished.get()
        try await target.finished.get()
        #expect(!FileManager.default.fileExists(atPath: targetPath))
    }
}

/// Records the errors a channel sees.
private final class ErrorRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let errors: Texts
    init(errors: Texts) { self.errors = errors }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors.all.withLock { $0.append("\(error)") }
        context.close(promise: nil)
    }
}
