import Logging
import NIOCore
import NIOPosix
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// One unary ttrpc call as a method handler sees it.
public struct TTRPCCall: Sendable {
    /// Fully qualified service name, e.g. `containerd.task.v2.Task`.
    public var service: String
    /// Method name, e.g. `Create`.
    public var method: String
    /// The encoded request message.
    public var payload: [UInt8]
    /// Request metadata (`KeyValue` pairs in arrival order).
    public var metadata: [(key: String, value: String)]
    /// The caller's timeout in nanoseconds, 0 for none.
    public var timeoutNanoseconds: Int64

    /// The first metadata value for `key`.
    public func metadataValue(_ key: String) -> String? { metadata.first { $0.key == key }?.value }
}

/// Maps service and method names to handlers.
///
/// A unary handler returns the encoded response message, or throws. ``TTRPCStatusError`` chooses the
/// status code; any other error becomes `Unknown` with the error's description. A server-streaming
/// handler sends any number of messages through a ``TTRPCStreamWriter`` and then returns (or throws).
public struct TTRPCRouter: Sendable {
    /// A unary method handler.
    public typealias Handler = @Sendable (TTRPCCall) async throws -> [UInt8]
    /// A server-streaming method handler: sends messages with the writer, returns to end the stream.
    public typealias StreamHandler = @Sendable (TTRPCCall, TTRPCStreamWriter) async throws -> Void

    /// What serves one method.
    enum Route: Sendable {
        case unary(Handler)
        case serverStream(StreamHandler)
    }

    private var routes: [String: [String: Route]] = [:]

    /// An empty router.
    public init() {}

    /// Registers `handler` for `service`/`method`, replacing an earlier one.
    public mutating func register(service: String, method: String, _ handler: @escaping Handler) {
        routes[service, default: [:]][method] = .unary(handler)
    }

    /// Registers a server-streaming `handler` for `service`/`method`, replacing an earlier one.
    ///
    /// As in containerd/ttrpc, the registration (not the request's flags) makes a method streaming:
    /// the handler's messages go out as Data frames, a normal return ends the stream with an empty
    /// Data frame flagged `remoteClosed | noData`, and a thrown error ends it with a Response frame
    /// carrying the status.
    public mutating func registerServerStream(service: String, method: String, _ handler: @escaping StreamHandler) {
        routes[service, default: [:]][method] = .serverStream(handler)
    }

    /// The unary handler registered for `service`/`method`, if any (to wrap it with another).
    public func unaryHandler(service: String, method: String) -> Handler? {
        guard case .unary(let handler)? = routes[service]?[method] else { return nil }
        return handler
    }

    /// The route for `service`/`method`, if one was registered.
    func route(service: String, method: String) -> Route? { routes[service]?[method] }

    /// The error status for a failed handler.
    static func status(for error: any Error) -> RPCStatus {
        if let error = error as? TTRPCStatusError { return RPCStatus(code: error.code, message: error.message) }
        if error is CancellationError { return RPCStatus(code: .cancelled, message: "cancelled") }
        return RPCStatus(code: .unknown, message: String(describing: error))
    }

    /// The response to a unary call: the handler's payload, or an error status.
    static func respond(to call: TTRPCCall, with handler: Handler) async -> TTRPCResponse {
        do {
            let payload = try await handler(call)
            return TTRPCResponse(status: RPCStatus(code: .ok), payload: payload)
        } catch {
            return TTRPCResponse(status: status(for: error))
        }
    }
}

/// Sends the messages of one server stream as ttrpc Data frames.
///
/// Handed to a ``TTRPCRouter/StreamHandler``; valid until the handler returns. ttrpc has no flow
/// control of its own: `send` waits while the connection's outbound buffer is full (NIO
/// back-pressure), so a slow reader slows the handler down rather than growing memory here.
public struct TTRPCStreamWriter: Sendable {
    private let outbound: NIOAsyncChannelOutboundWriter<TTRPCFrame>
    /// The ttrpc stream id (odd, chosen by the client).
    public let streamID: UInt32

    init(outbound: NIOAsyncChannelOutboundWriter<TTRPCFrame>, streamID: UInt32) {
        self.outbound = outbound
        self.streamID = streamID
    }

    /// Sends one encoded message.
    /// - Throws: NIO's `ChannelError` (for example `ioOnClosedChannel`) when the connection is gone.
    public func send(_ payload: [UInt8]) async throws {
        try await outbound.write(TTRPCFrame(streamID: streamID, type: .data, payload: payload))
    }
}

/// The peer of a unix socket as `SO_PEERCRED` reports it (`struct ucred`).
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// A ttrpc server on a unix stream socket.
///
/// Serves unary calls and server streams (client streaming is not supported). Calls on one connection run
/// concurrently in a task group, as ttrpc multiplexes them by stream id (a `Wait` call may block for
/// the life of a container). Connections from a peer whose uid differs from ours are closed at once,
/// as containerd's own shims do (`SO_PEERCRED`).
///
/// Written here because no listed library speaks ttrpc; the frame and message codecs are ZPCore's.
public struct TTRPCServer: Sendable {
    private let router: TTRPCRouter
    private let group: any EventLoopGroup
    private let logger: Logger

    /// - Parameters:
    ///   - router: The methods served.
    ///   - group: The event loops for the sockets.
    ///   - logger: Connection-level problems are logged here.
    public init(router: TTRPCRouter, group: any EventLoopGroup, logger: Logger) {
        self.router = router
        self.group = group
        self.logger = logger
    }

    /// Serves on an already bound **and listening** socket until the task is cancelled.
    ///
    /// Cancel only when no connection is being accepted at that moment, or end the process instead
    /// (the shim does): NIO traps if an accepted connection that no task took over is dropped.
    ///
    /// - Parameter descriptor: The socket; the server takes ownership and closes it at the end.
    /// - Throws: NIO channel errors.
    public func run(listeningDescriptor descriptor: CInt) async throws {
        let server = try await ServerBootstrap(group: group)
            .bind(descriptor, childChannelInitializer: childInitializer)
        try await serve(server)
    }

    /// Binds `path` (replacing a stale socket file), restricts it to the owner and serves until the
    /// task is cancelled.
    ///
    /// - Parameters:
    ///   - path: The socket file.
    ///   - onListening: Called once the socket accepts connections.
    public func run(unixSocketPath path: String, onListening: @Sendable () -> Void = {}) async throws {
        let server = try await ServerBootstrap(group: group)
            .bind(
                unixDomainSocketPath: path,
                cleanupExistingSocketFile: true,
                childChannelInitializer: childInitializer
            )
        _ = chmod(path, 0o600)
        onListening()
        try await serve(server)
    }

    /// Binds a TCP address and serves until the task is cancelled. Every accepted connection is
    /// first given to `prepareConnection`, which adds what the transport needs before the ttrpc
    /// frames (the manager's node service adds a TLS handler requiring a client certificate there,
    /// decision 0049). No peer uid check: a TCP peer is identified by what `prepareConnection`
    /// adds.
    ///
    /// - Parameters:
    ///   - host: The address to bind (`0.0.0.0` for every IPv4 address).
    ///   - port: The port; 0 picks a free one.
    ///   - prepareConnection: Adds handlers to a new connection's pipeline (synchronously, on its
    ///     event loop); a throw closes the connection.
    ///   - onListening: Called once with the bound address.
    /// - Throws: NIO errors (the address is in use or not local).
    public func run(
        tcpHost host: String,
        port: Int,
        prepareConnection: @escaping @Sendable (any Channel) throws -> Void,
        onListening: @Sendable (SocketAddress) -> Void = { _ in }
    ) async throws {
        let logger = logger
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture { () throws -> NIOAsyncChannel<TTRPCFrame, TTRPCFrame> in
                    try prepareConnection(channel)
                    try channel.pipeline.syncOperations.addTTRPCFrameHandlers()
                    return try Self.wrapAccepted(channel)
                }.flatMapErrorThrowing { error -> NIOAsyncChannel<TTRPCFrame, TTRPCFrame> in
                    logger.warning("refusing ttrpc connection", metadata: ["error": "\(error)"])
                    channel.close(promise: nil)
                    throw error
                }
            }
        if let address = server.channel.localAddress { onListening(address) }
        try await serve(server)
    }

    private var childInitializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<TTRPCFrame, TTRPCFrame>> {
        let logger = logger
        return { channel in
            let ownUID = getuid()
            let credentials: EventLoopFuture<PeerCredentials>
            if let provider = channel as? any SocketOptionProvider {
                credentials = provider.unsafeGetSocketOption(
                    level: SocketOptionLevel(SOL_SOCKET),
                    name: SocketOptionName(SO_PEERCRED)
                )
            } else {
                credentials = channel.eventLoop.makeSucceededFuture(PeerCredentials(uid: ownUID))
            }
            return credentials.flatMapThrowing { peer in
                guard peer.uid == ownUID else {
                    logger.warning("refusing ttrpc peer", metadata: ["pid": "\(peer.pid)", "uid": "\(peer.uid)"])
                    channel.close(promise: nil)
                    throw TTRPCTransportError.peerUIDMismatch(peerUID: peer.uid, ownUID: ownUID)
                }
                try channel.pipeline.syncOperations.addTTRPCFrameHandlers()
                return try Self.wrapAccepted(channel)
            }
        }
    }

    /// Wraps an accepted connection, closed when dropped unserved.
    ///
    /// A connection accepted just before the server stops waits in the server's inbound buffer and is
    /// dropped with it, never reaching `executeThenClose`: with `init(wrappingChannelSynchronously:)`
    /// its writer's deinit is a precondition failure ("Deinited NIOAsyncWriter without calling
    /// finish()", a crash seen in ZPTTRPCTests when a test's server was cancelled). The older
    /// initializer closes such a connection on deinit instead; it is deprecated only because NIO
    /// prefers explicit teardown, which every served connection still gets (`executeThenClose`).
    /// (One deprecation warning, on purpose.)
    private static func wrapAccepted(_ channel: any Channel) throws -> NIOAsyncChannel<TTRPCFrame, TTRPCFrame> {
        try NIOAsyncChannel<TTRPCFrame, TTRPCFrame>(synchronouslyWrapping: channel)
    }

    private func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<TTRPCFrame, TTRPCFrame>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await self.serve(connection) }
                }
            }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<TTRPCFrame, TTRPCFrame>) async {
        let router = router
        do {
            try await connection.executeThenClose { inbound, outbound in
                // Unary calls finish even when the peer has left (a half-done Create must not be cut
                // short); streams are cancelled when the peer's side ends, or they would run forever.
                try await withThrowingDiscardingTaskGroup { calls in
                    try await withThrowingDiscardingTaskGroup { streams in
                        for try await frame in inbound {
                            // Data frames from clients (client streaming) are not served; ignore them.
                            guard frame.type == .request else { continue }
                            switch Self.dispatch(frame, router: router) {
                            case .respond(let response):
                                try await outbound.write(
                                    TTRPCFrame(streamID: frame.streamID, type: .response, payload: response.encoded())
                                )
                            case .unary(let call, let handler):
                                calls.addTask {
                                    let response = await TTRPCRouter.respond(to: call, with: handler)
                                    try await outbound.write(
                                        TTRPCFrame(
                                            streamID: frame.streamID,
                                            type: .response,
                                            payload: response.encoded()
                                        )
                                    )
                                }
                            case .serverStream(let call, let handler):
                                streams.addTask {
                                    await Self.runStream(call, handler, streamID: frame.streamID, outbound: outbound)
                                }
                            }
                        }
                        streams.cancelAll()
                    }
                }
            }
        } catch {
            logger.debug("ttrpc connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// What to do with one request frame.
    private enum Dispatch {
        case respond(TTRPCResponse)
        case unary(TTRPCCall, TTRPCRouter.Handler)
        case serverStream(TTRPCCall, TTRPCRouter.StreamHandler)
    }

    private static func dispatch(_ frame: TTRPCFrame, router: TTRPCRouter) -> Dispatch {
        let request: TTRPCRequest
        do {
            request = try TTRPCRequest(decoding: frame.payload)
        } catch {
            return .respond(
                TTRPCResponse(status: RPCStatus(code: .invalidArgument, message: "malformed ttrpc request: \(error)"))
            )
        }
        let call = TTRPCCall(
            service: request.service,
            method: request.method,
            payload: request.payload,
            metadata: request.metadata,
            timeoutNanoseconds: request.timeoutNanoseconds
        )
        switch router.route(service: call.service, method: call.method) {
        case .none:
            return .respond(
                TTRPCResponse(
                    status: RPCStatus(
                        code: .unimplemented,
                        message: "\(call.service)/\(call.method) is not implemented"
                    )
                )
            )
        case .unary(let handler): return .unary(call, handler)
        case .serverStream(let handler): return .serverStream(call, handler)
        }
    }

    /// Runs a stream handler and ends the stream the way containerd/ttrpc does: an empty Data frame
    /// flagged `remoteClosed | noData` after a normal return, a Response with the status after an
    /// error. Write failures mean the peer is gone and are ignored.
    private static func runStream(
        _ call: TTRPCCall,
        _ handler: TTRPCRouter.StreamHandler,
        streamID: UInt32,
        outbound: NIOAsyncChannelOutboundWriter<TTRPCFrame>
    ) async {
        do {
            try await handler(call, TTRPCStreamWriter(outbound: outbound, streamID: streamID))
            try? await outbound.write(
                TTRPCFrame(streamID: streamID, type: .data, flags: [.remoteClosed, .noData], payload: [])
            )
        } catch {
            let response = TTRPCResponse(status: TTRPCRouter.status(for: error))
            try? await outbound.write(TTRPCFrame(streamID: streamID, type: .response, payload: response.encoded()))
        }
    }
}
