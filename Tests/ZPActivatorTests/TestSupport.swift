import Foundation
import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPActivator

#if canImport(Glibc)
import Glibc
#endif

/// Raises this process's soft descriptor limit towards `wanted` (up to the hard limit) and
/// returns the soft limit in force afterwards.
func raiseDescriptorLimit(to wanted: UInt) -> UInt {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < wanted {
        limit.rlim_cur = min(wanted, limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return UInt(limit.rlim_cur)
}

/// This process's open descriptors that are TCP sockets with a local or remote port in `ports`
/// (from `/proc/net/tcp{,6}` of this network namespace, matched by socket inode). Unlike a plain
/// descriptor count, other suites running in the same process cannot disturb it.
func ownTCPSockets(onPorts ports: Set<UInt16>) -> [String] {
    var inodes: Set<String> = []
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let columns = line.split(separator: " ", omittingEmptySubsequences: true)
            guard columns.count > 9 else { continue }
            let endpointPorts = [columns[1], columns[2]].compactMap { endpoint in
                endpoint.split(separator: ":").last.flatMap { UInt16($0, radix: 16) }
            }
            if endpointPorts.contains(where: ports.contains), columns[9] != "0" {
                inodes.insert(String(columns[9]))
            }
        }
    }
    return openFileDescriptorTargets().filter { target in
        inodes.contains { target.hasSuffix("socket:[\($0)]") }
    }
}

/// What each open descriptor points to (for leak messages).
func openFileDescriptorTargets() -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return names.sorted().map { name in
        "\(name)->" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)")) ?? "?")
    }
}

/// The activator's reports and restores in an ``EventLog``.
extension EventLog where Event == ActivatorEvent {
    var reports: [ConnectionReport] { all.compactMap { if case .connectionFinished(let r) = $0 { r } else { nil } } }
    var restoresStarted: Int { count { $0 == .restoreStarted } }
}

/// A TCP socket bound to 127.0.0.1 on a free port but not listening: connects are refused
/// until ``TestApp/serve(socket:behaviour:)`` listens on it.
struct ReservedPort {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(bound == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        try #require(named == 0)
        self.fd = fd
        self.port = UInt16(bigEndian: address.sin_port)
    }
}

/// The "application" behind the activator: a real NIO server on a reserved port.
enum TestApp {
    enum Behaviour: Sendable {
        /// Reads an HTTP/1.x head; answers 200 with body `hello from app: <path>`; closes.
        case http
        /// Server speaks first: sends a banner at once, then echoes every byte until EOF.
        case bannerThenEcho
        /// Reads until EOF, then answers `got <n>: <bytes>` and closes.
        case answerAfterEOF
    }

    static let banner = "220 zpact-test-app ready\r\n"

    /// Listens on `socket`'s port and serves until the calling task is cancelled.
    ///
    /// The reserved socket is closed and the port bound afresh with a 4096 backlog: adopting
    /// the socket would make NIO listen with a backlog of 128 first, and 500 dialers retrying
    /// at once overflow that before the accept loop runs (dropped SYNs cost a 1 s retransmit).
    static func serve(socket: ReservedPort, behaviour: Behaviour) async throws {
        close(socket.fd)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: "127.0.0.1", port: Int(socket.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
        try await serve(server, behaviour: behaviour)
    }

    /// Adopts a bound socket (made in another network namespace) and serves until cancelled.
    static func serve(adopting fd: Int32, behaviour: Behaviour) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
        try await serve(server, behaviour: behaviour)
    }

    private static func serve(
        _ server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>,
        behaviour: Behaviour
    ) async throws {
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask { try? await handle(connection, behaviour: behaviour) }
                }
            }
        }
    }

    private static func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, behaviour: Behaviour) async throws
    {
        try await connection.executeThenClose { inbound, outbound in
            switch behaviour {
            case .http:
                var received: [UInt8] = []
                for try await chunk in inbound {
                    received += chunk.readableBytesView
                    if let head = String(decoding: received, as: UTF8.self).range(of: "\r\n\r\n") {
                        let text = String(decoding: received, as: UTF8.self)[..<head.lowerBound]
                        let path = text.split(separator: " ").dropFirst().first.map(String.init) ?? "?"
                        let body = "hello from app: \(path)"
                        try await outbound.write(
                            ByteBuffer(
                                string:
                                    "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
                            )
                        )
                        break
                    }
                }
            case .bannerThenEcho:
                try await outbound.write(ByteBuffer(string: banner))
                for try await chunk in inbound { try await outbound.write(chunk) }
            case .answerAfterEOF:
                var received: [UInt8] = []
                for try await chunk in inbound { received += chunk.readableBytesView }
                try await outbound.write(
                    ByteBuffer(string: "got \(received.count): " + String(decoding: received, as: UTF8.self))
                )
            }
            outbound.finish()
        }
    }
}

/// A plain TCP client on NIO, for the tests.
enum TestClient {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    /// Connects to `address`, from `source` (an address of this host) when given.
    static func connect(_ address: SocketAddress, from source: SocketAddress? = nil) async throws -> Connection {
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
        if let source { bootstrap = bootstrap.bind(to: source) }
        return try await bootstrap
            .connect(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
    }

    /// Connects, sends `request` (optionally half-closing), reads until EOF; returns what came back.
    static func exchange(_ address: SocketAddress, send request: String, halfClose: Bool = false) async throws -> String
    {
        try await exchange(on: try await connect(address), send: request, halfClose: halfClose)
    }

    /// Connects from inside `namespace` (the socket is made and connected there), then exchanges.
    static func exchange(
        in namespace: TestNetns,
        port: Int,
        send request: String
    ) async throws -> String {
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let socket = try namespace.run { () throws -> SharedDescriptor in
            let fd = try OwnedDescriptor.socket(domain: AF_INET, type: Int32(SOCK_STREAM.rawValue), subject: "netns")
            try SocketCalls.connect(fd, to: address, timeout: .seconds(5))
            return SharedDescriptor(fd)
        }
        let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .withConnectedSocket(socket.take()!.disown()) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
        return try await exchange(on: connection, send: request, halfClose: false)
    }

    static func exchange(on connection: Connection, send request: String, halfClose: Bool) async throws -> String {
        try await connection.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            if halfClose { outbound.finish() }
            var received: [UInt8] = []
            for try await chunk in inbound { received += chunk.readableBytesView }
            return String(decoding: received, as: UTF8.self)
        }
    }
}

/// Runs an activator for one port around `body`, then cancels it and waits until it stopped.
func withActivator<R: Sendable>(
    appPort: UInt16,
    configuration: ActivatorConfiguration = ActivatorConfiguration(),
    startsScaledDown: Bool = true,
    probeConnections: (any ProbeConnectionCheck)? = nil,
    events: EventLog<ActivatorEvent>,
    restore: @escaping @Sendable () async throws -> Void,
    _ body: @escaping @Sendable (Activator, SocketAddress) async throws -> R
) async throws -> R {
    let activator = try await Activator.bind(
        ports: [PortRedirect(appPort: appPort, source: .bind(try SocketAddress(ipAddress: "127.0.0.1", port: 0)))],
        configuration: configuration,
        startsScaledDown: startsScaledDown,
        probeConnections: probeConnections,
        events: events.sink,
        restore: restore
    )
    let address = activator.listeners[0].localAddress
    return try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask {
            try await activator.run()
            return nil
        }
        group.addTask { try await body(activator, address) }
        defer { group.cancelAll() }
        while let result = try await group.next() {
            if let result {
                group.cancelAll()
                return result
            }
        }
        throw CancellationError()
    }
}

/// The port a bound socket got.
func boundPort(_ socket: SharedDescriptor) throws -> UInt16 {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let fd = socket.rawValue
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    try #require(named == 0)
    return UInt16(bigEndian: address.sin_port)
}

/// Makes the activator's dial sockets inside a test namespace.
final class NamespaceSocketFactory: ApplicationSocketFactory {
    let namespace: TestNetns
    let made = Atomic<Int>(0)

    init(namespace: TestNetns) {
        self.namespace = namespace
    }

    func makeStreamSocket(ipv6: Bool) throws -> OwnedDescriptor {
        made.add(1, ordering: .relaxed)
        return try NetworkNamespace(path: FilePath(namespace.path)).makeTCPSocket(ipv6: ipv6)
    }
}
