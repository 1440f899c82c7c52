#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import ZPCore

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
/// A handler returns the encoded response message, or throws. ``TTRPCStatusError`` chooses the
/// status code; any other error becomes `Unknown` with the error's description.
public struct TTRPCRouter: Sendable {
    /// A method handler.
    public typealias Handler = @Sendable (TTRPCCall) async throws -> [UInt8]

    private var handlers: [String: [String: Handler]] = [:]

    /// An empty router.
    public init() {}

    /// Registers `handler` for `service`/`method`, replacing an earlier one.
    public mutating func register(service: String, method: String, _ handler: @escaping Handler) {
        handlers[service, default: [:]][method] = handler
    }

    /// The response to `request`: the handler's payload, or an error status.
    func respond(to call: TTRPCCall) async -> TTRPCResponse {
        guard let handler = handlers[call.service]?[call.method] else {
            return TTRPCResponse(status: RPCStatus(code: .unimplemented, message: "\(call.service)/\(call.method) is not implemented"))
        }
        do {
            let payload = try await handler(call)
            return TTRPCResponse(status: RPCStatus(code: .ok), payload: payload)
        } catch let error as TTRPCStatusError {
            return TTRPCResponse(status: RPCStatus(code: error.code, message: error.message))
        } catch {
            return TTRPCResponse(status: RPCStatus(code: .unknown, message: String(describing: error)))
        }
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
/// Serves unary calls only (the containerd task API needs no streams). Calls on one connection run
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
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: childInitializer)
        _ = chmod(path, 0o600)
        onListening()
        try await serve(server)
    }

    private var childInitializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<TTRPCFrame, TTRPCFrame>> {
        let logger = logger
        return { channel in
            let ownUID = getuid()
            let credentials: EventLoopFuture<PeerCredentials>
            if let provider = channel as? any SocketOptionProvider {
                credentials = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
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
                return try NIOAsyncChannel<TTRPCFrame, TTRPCFrame>(wrappingChannelSynchronously: channel)
            }
        }
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
        let logger = logger
        do {
            try await connection.executeThenClose { inbound, outbound in
                try await withThrowingDiscardingTaskGroup { calls in
                    for try await frame in inbound {
                        guard frame.type == .request else { continue }  // data frames: no streams served
                        let request: TTRPCRequest
                        do {
                            request = try TTRPCRequest(decoding: frame.payload)
                        } catch {
                            let response = TTRPCResponse(status: RPCStatus(code: .invalidArgument, message: "malformed ttrpc request: \(error)"))
                            try await outbound.write(TTRPCFrame(streamID: frame.streamID, type: .response, payload: response.encoded()))
                            continue
                        }
                        let call = TTRPCCall(service: request.service, method: request.method, payload: request.payload,
                                             metadata: request.metadata, timeoutNanoseconds: request.timeoutNanoseconds)
                        calls.addTask {
                            let response = await router.respond(to: call)
                            try await outbound.write(TTRPCFrame(streamID: frame.streamID, type: .response, payload: response.encoded()))
                        }
                    }
                }
            }
        } catch {
            logger.debug("ttrpc connection ended", metadata: ["error": "\(error)"])
        }
    }
}
