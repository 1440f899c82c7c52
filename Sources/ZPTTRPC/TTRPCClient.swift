import Logging
import NIOCore
import NIOPosix
import ZPCore

/// A ttrpc client on a unix stream socket: unary calls, many in flight at once.
///
/// Stream ids are odd and grow by two, as the protocol requires of clients. Written here because no
/// listed library speaks ttrpc; the codecs are ZPCore's.
public final class TTRPCClient: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Connects to a unix socket.
    ///
    /// - Parameters:
    ///   - path: The socket path; a `unix://` prefix is removed.
    ///   - group: The event loops to use.
    /// - Throws: NIO connection errors (for example `ECONNREFUSED`, `ENOENT`).
    public static func connect(unixSocketPath path: String, group: any EventLoopGroup) async throws -> TTRPCClient {
        let plain = path.hasPrefix("unix://") ? String(path.dropFirst("unix://".count)) : path
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addTTRPCFrameHandlers()
                    try channel.pipeline.syncOperations.addHandler(TTRPCClientHandler())
                }
            }
            .connect(unixDomainSocketPath: plain).get()
        return TTRPCClient(channel: channel)
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
    public func call(service: String, method: String, payload: [UInt8],
                     metadata: [(key: String, value: String)] = [],
                     timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        let nanos = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let request = TTRPCRequest(service: service, method: method, payload: payload, timeoutNanoseconds: nanos, metadata: metadata)
        let promise = channel.eventLoop.makePromise(of: TTRPCResponse.self)
        let outbound = TTRPCClientHandler.Outbound(request: request, timeout: timeout, promise: promise)
        // A write on a channel that is already closed never reaches the handler (the pipeline is
        // gone), so its failure must fail the call; otherwise the call waits forever (seen after
        // containerd restarted and the event publisher reused its dead connection).
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail($0) }
        channel.writeAndFlush(outbound, promise: written)
        let response = try await promise.futureResult.get()
        if let status = response.status, status.code != RPCStatusCode.ok.rawValue {
            throw TTRPCStatusError(status.statusCode ?? .unknown, status.message)
        }
        return response.payload
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

/// Assigns stream ids, keeps the calls in flight and completes them from response frames.
final class TTRPCClientHandler: ChannelDuplexHandler {
    typealias InboundIn = TTRPCFrame
    typealias OutboundIn = Outbound
    typealias OutboundOut = TTRPCFrame

    /// A call to send and the promise its response completes.
    struct Outbound {
        var request: TTRPCRequest
        var timeout: Duration
        var promise: EventLoopPromise<TTRPCResponse>
    }

    private struct Pending {
        var service: String
        var method: String
        var promise: EventLoopPromise<TTRPCResponse>
        var timeout: Scheduled<Void>
    }

    private var nextStreamID: UInt32 = 1
    private var pending: [UInt32: Pending] = [:]
    private var isClosed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        let service = call.request.service, method = call.request.method
        guard !isClosed else {
            call.promise.fail(TTRPCTransportError.connectionClosed(service: service, method: method))
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let id = nextStreamID
        nextStreamID &+= 2
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = call.timeout
        let timer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            if let entry = loopBoundSelf.value.pending.removeValue(forKey: id) {
                entry.promise.fail(TTRPCTransportError.timedOut(service: service, method: method, after: timeout))
            }
        }
        pending[id] = Pending(service: service, method: method, promise: call.promise, timeout: timer)
        let frame = TTRPCFrame(streamID: id, type: .request, payload: call.request.encoded())
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.type == .response, let entry = pending.removeValue(forKey: frame.streamID) else { return }
        entry.timeout.cancel()
        do {
            entry.promise.succeed(try TTRPCResponse(decoding: frame.payload))
        } catch {
            entry.promise.fail(TTRPCTransportError.malformedResponse(service: entry.service, method: entry.method, reason: "\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        let all = pending
        pending.removeAll()
        for (_, entry) in all {
            entry.timeout.cancel()
            entry.promise.fail(TTRPCTransportError.connectionClosed(service: entry.service, method: entry.method))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension TTRPCClientHandler: Sendable {}
