import Logging
import NIOCore
import NIOPosix
import Synchronization
import ZPCore

/// The first error a connection's pipeline reported (a TLS alert, a refused certificate), shared
/// by the client and its handler: a call made after the connection closed names it too.
final class ConnectionFailure: Sendable {
    private let reason = Mutex<String?>(nil)

    /// Keeps the first reason.
    func record(_ error: any Error) {
        reason.withLock { if $0 == nil { $0 = "\(error)" } }
    }

    /// The error for a call on a closed connection.
    func closedError(service: String, method: String) -> TTRPCTransportError {
        guard let text = reason.withLock({ $0 }) else { return .connectionClosed(service: service, method: method) }
        return .connectionFailed(service: service, method: method, reason: text)
    }
}

/// A ttrpc client on a unix stream socket: unary calls, many in flight at once.
///
/// Stream ids are odd and grow by two, as the protocol requires of clients. Written here because no
/// listed library speaks ttrpc; the codecs are ZPCore's.
public final class TTRPCClient: Sendable {
    private let channel: any Channel
    private let failure: ConnectionFailure

    private init(channel: any Channel, failure: ConnectionFailure) {
        self.channel = channel
        self.failure = failure
    }

    /// Connects to a unix socket.
    ///
    /// - Parameters:
    ///   - path: The socket path; a `unix://` prefix is removed.
    ///   - group: The event loops to use.
    /// - Throws: NIO connection errors (for example `ECONNREFUSED`, `ENOENT`).
    public static func connect(unixSocketPath path: String, group: any EventLoopGroup) async throws -> TTRPCClient {
        let plain = path.hasPrefix("unix://") ? String(path.dropFirst("unix://".count)) : path
        let failure = ConnectionFailure()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addTTRPCFrameHandlers()
                    try channel.pipeline.syncOperations.addHandler(TTRPCClientHandler(failure: failure))
                }
            }
            .connect(unixDomainSocketPath: plain).get()
        return TTRPCClient(channel: channel, failure: failure)
    }

    /// Connects to a TCP address. `prepareConnection` adds what the transport needs before the
    /// ttrpc frames (a TLS client handler for the node service's peers, decision 0049); an error
    /// such a handler reports (a refused certificate) fails the calls in flight with
    /// ``TTRPCTransportError/connectionFailed(service:method:reason:)`` naming it.
    ///
    /// - Parameters:
    ///   - host: The peer's address.
    ///   - port: The peer's port.
    ///   - group: The event loops to use.
    ///   - connectTimeout: How long the TCP connect may take.
    ///   - prepareConnection: Adds handlers to the new connection's pipeline (synchronously).
    /// - Throws: NIO connection errors (`ECONNREFUSED`, a connect timeout).
    public static func connect(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        connectTimeout: Duration = .seconds(10),
        prepareConnection: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> TTRPCClient {
        let nanos =
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000
        let failure = ConnectionFailure()
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(nanos))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try prepareConnection(channel)
                    try channel.pipeline.syncOperations.addTTRPCFrameHandlers()
                    try channel.pipeline.syncOperations.addHandler(TTRPCClientHandler(failure: failure))
                }
            }
            .connect(host: host, port: port).get()
        return TTRPCClient(channel: channel, failure: failure)
    }

    /// Calls `service`/`method` and returns the encoded response message.
    ///
    /// - Parameters:
    ///   - service: Fully qualified service name.
    ///   - method: Method name.
    ///   - payload: The encoded request message.
    ///   - metadata: Request metadata, e.g. `containerd-namespace-ttrpc`.
    ///   - timeout: How long to wait for the answer; also sent to the server.
    /// - Throws: ``TTRPCStatusError`` when the server answered with an error status,
    ///   ``TTRPCTransportError`` when the connection closed, timed out or sent garbage.
    public func call(
        service: String,
        method: String,
        payload: [UInt8],
        metadata: [(key: String, value: String)] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> [UInt8] {
        let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let request = TTRPCRequest(
            service: service,
            method: method,
            payload: payload,
            timeoutNanoseconds: nanos,
            metadata: metadata
        )
        let promise = channel.eventLoop.makePromise(of: TTRPCResponse.self)
        let outbound = TTRPCClientHandler.Outbound.unary(request: request, timeout: timeout, promise: promise)
        // On a closed channel the write never reaches our handler (the pipeline is torn down):
        // fail the call from the write's own failure, or it would wait forever.
        let written = channel.eventLoop.makePromise(of: Void.self)
        let failure = failure
        written.futureResult.whenFailure { _ in
            promise.fail(failure.closedError(service: service, method: method))
        }
        channel.writeAndFlush(outbound, promise: written)
        let response = try await promise.futureResult.get()
        if let status = response.status, status.code != RPCStatusCode.ok.rawValue {
            throw TTRPCStatusError(status.statusCode ?? .unknown, status.message)
        }
        return response.payload
    }

    /// Opens a server stream on `service`/`method` and returns the messages the server sends.
    ///
    /// The request goes out flagged `remoteClosed` (the client sends no data frames), as
    /// containerd/ttrpc's client does for a method that streams only from the server. The sequence
    /// yields each Data frame's payload and ends when the server closes the stream; it throws
    /// ``TTRPCStatusError`` when the server ends it with an error status,
    /// ``TTRPCTransportError/connectionClosed(service:method:)`` when the connection drops, and
    /// ``TTRPCTransportError/streamBufferOverflow(service:method:limit:)`` when more than
    /// `bufferLimit` messages arrived that the caller has not read (ttrpc has no flow control, so
    /// the client ends the stream loudly instead of dropping messages or growing without bound).
    /// Stopping the iteration leaves the stream open on the server until the connection closes:
    /// ttrpc has no frame to cancel a stream, so use a connection of its own for a stream that you
    /// mean to stop early.
    ///
    /// - Parameters:
    ///   - service: Fully qualified service name.
    ///   - method: Method name.
    ///   - payload: The encoded request message.
    ///   - metadata: Request metadata.
    ///   - bufferLimit: Messages held for the caller before the stream fails.
    public func serverStream(
        service: String,
        method: String,
        payload: [UInt8],
        metadata: [(key: String, value: String)] = [],
        bufferLimit: Int = 4096
    ) -> AsyncThrowingStream<[UInt8], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: [UInt8].self,
            throwing: (any Error).self,
            bufferingPolicy: .bufferingOldest(bufferLimit)
        )
        let request = TTRPCRequest(service: service, method: method, payload: payload, metadata: metadata)
        let open = TTRPCClientHandler.Outbound.stream(
            request: request,
            bufferLimit: bufferLimit,
            continuation: continuation
        )
        // As for unary calls: on a closed channel the write never reaches the handler.
        let written = channel.eventLoop.makePromise(of: Void.self)
        let failure = failure
        written.futureResult.whenFailure { _ in
            continuation.finish(throwing: failure.closedError(service: service, method: method))
        }
        channel.writeAndFlush(open, promise: written)
        return stream
    }

    /// Closes the connection; calls in flight fail with ``TTRPCTransportError/connectionClosed(service:method:)``.
    public func close() async {
        try? await channel.close()
    }

    /// Completes when the connection has closed, for whatever reason.
    public func waitClosed() async {
        try? await channel.closeFuture.get()
    }
}

/// Assigns stream ids, keeps the calls and streams in flight and completes them from the frames
/// that arrive.
final class TTRPCClientHandler: ChannelDuplexHandler {
    typealias InboundIn = TTRPCFrame
    typealias OutboundIn = Outbound
    typealias OutboundOut = TTRPCFrame

    /// A call or a stream to open.
    enum Outbound {
        /// A unary call and the promise its response completes.
        case unary(request: TTRPCRequest, timeout: Duration, promise: EventLoopPromise<TTRPCResponse>)
        /// A server stream and the continuation its messages go to.
        case stream(
            request: TTRPCRequest,
            bufferLimit: Int,
            continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation
        )
    }

    private struct Pending {
        var service: String
        var method: String
        var promise: EventLoopPromise<TTRPCResponse>
        var timeout: Scheduled<Void>
    }

    private struct OpenStream {
        var service: String
        var method: String
        var bufferLimit: Int
        var continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation
    }

    private var nextStreamID: UInt32 = 1
    /// The first error the pipeline reported (a TLS alert), named when the calls in flight fail.
    private let failure: ConnectionFailure

    init(failure: ConnectionFailure) {
        self.failure = failure
    }
    private var pending: [UInt32: Pending] = [:]
    private var streams: [UInt32: OpenStream] = [:]
    private var isClosed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .unary(let request, let timeout, let callPromise):
            guard !isClosed else {
                callPromise.fail(failure.closedError(service: request.service, method: request.method))
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            let id = takeStreamID()
            let service = request.service
            let method = request.method
            let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
            let nanos =
                Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            let timer = context.eventLoop.scheduleTask(in: .nanoseconds(nanos)) {
                if let entry = loopBoundSelf.value.pending.removeValue(forKey: id) {
                    entry.promise.fail(TTRPCTransportError.timedOut(service: service, method: method, after: timeout))
                }
            }
            pending[id] = Pending(service: service, method: method, promise: callPromise, timeout: timer)
            context.write(
                wrapOutboundOut(TTRPCFrame(streamID: id, type: .request, payload: request.encoded())),
                promise: promise
            )
        case .stream(let request, let bufferLimit, let continuation):
            guard !isClosed else {
                continuation.finish(throwing: failure.closedError(service: request.service, method: request.method))
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            let id = takeStreamID()
            streams[id] = OpenStream(
                service: request.service,
                method: request.method,
                bufferLimit: bufferLimit,
                continuation: continuation
            )
            let frame = TTRPCFrame(streamID: id, type: .request, flags: .remoteClosed, payload: request.encoded())
            context.write(wrapOutboundOut(frame), promise: promise)
        }
    }

    private func takeStreamID() -> UInt32 {
        let id = nextStreamID
        nextStreamID &+= 2
        return id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if let stream = streams[frame.streamID] {
            streamFrame(frame, stream)
            return
        }
        guard frame.type == .response, let entry = pending.removeValue(forKey: frame.streamID) else { return }
        entry.timeout.cancel()
        do {
            entry.promise.succeed(try TTRPCResponse(decoding: frame.payload))
        } catch {
            entry.promise.fail(
                TTRPCTransportError.malformedResponse(service: entry.service, method: entry.method, reason: "\(error)")
            )
        }
    }

    /// A frame on an open server stream: Data frames carry messages (the last one is flagged
    /// `remoteClosed`); a Response frame ends the stream with its status (and maybe one message).
    private func streamFrame(_ frame: TTRPCFrame, _ stream: OpenStream) {
        switch frame.type {
        case .data:
            if !frame.flags.contains(.noData) { deliver(frame.payload, on: frame.streamID, stream) }
            if frame.flags.contains(.remoteClosed), streams.removeValue(forKey: frame.streamID) != nil {
                stream.continuation.finish()
            }
        case .response:
            streams.removeValue(forKey: frame.streamID)
            do {
                let response = try TTRPCResponse(decoding: frame.payload)
                if let status = response.status, status.code != RPCStatusCode.ok.rawValue {
                    stream.continuation.finish(
                        throwing: TTRPCStatusError(status.statusCode ?? .unknown, status.message)
                    )
                } else {
                    if !response.payload.isEmpty { _ = stream.continuation.yield(response.payload) }
                    stream.continuation.finish()
                }
            } catch {
                stream.continuation.finish(
                    throwing: TTRPCTransportError.malformedResponse(
                        service: stream.service,
                        method: stream.method,
                        reason: "\(error)"
                    )
                )
            }
        case .request, .none:
            break
        }
    }

    private func deliver(_ payload: [UInt8], on id: UInt32, _ stream: OpenStream) {
        switch stream.continuation.yield(payload) {
        case .enqueued:
            break
        case .dropped:
            streams.removeValue(forKey: id)
            stream.continuation.finish(
                throwing: TTRPCTransportError.streamBufferOverflow(
                    service: stream.service,
                    method: stream.method,
                    limit: stream.bufferLimit
                )
            )
        case .terminated:
            streams.removeValue(forKey: id)  // the caller stopped reading; drop what still arrives
        @unknown default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        let all = pending
        pending.removeAll()
        for (_, entry) in all {
            entry.timeout.cancel()
            entry.promise.fail(failure.closedError(service: entry.service, method: entry.method))
        }
        let open = streams
        streams.removeAll()
        for (_, stream) in open {
            stream.continuation.finish(throwing: failure.closedError(service: stream.service, method: stream.method))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failure.record(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension TTRPCClientHandler: Sendable {}
