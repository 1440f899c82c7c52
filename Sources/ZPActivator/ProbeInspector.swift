import NIOCore

/// What the inspector decided about a connection.
enum InspectionVerdict: Sendable, Equatable {
    /// Answer this probe and close; never restore.
    case answer(ProbeAnswer)
    /// Forward to the application: the inspected bytes follow as the first ``ClientInbound/bytes(_:)``.
    case forward(ForwardReason)
}

/// The probe answer to send.
enum ProbeAnswer: Sendable, Equatable {
    case tcp
    case http
    case grpc(streamID: UInt32)

    var kind: ProbeKind {
        switch self {
        case .tcp: return .tcp
        case .http: return .http
        case .grpc: return .grpcHealth
        }
    }
}

/// The messages a client connection's async channel yields: first exactly one verdict, then
/// (for forwarded connections) the client's bytes, inspected ones first, unchanged.
enum ClientInbound: Sendable {
    case verdict(InspectionVerdict)
    case bytes(ByteBuffer)
}

/// Buffers a connection's first bytes (up to `limit`, for at most `timeout`) and decides with
/// ``ProbeClassifier`` whether it is a probe. Runs on the channel's event loop; the timeout is
/// an event-loop scheduled task, cancelled when the decision is made.
final class ProbeInspector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ClientInbound

    private enum State {
        case waitingForActive
        case inspecting(ByteBuffer)
        case decided
    }

    private var state = State.waitingForActive
    /// Set once the server's SETTINGS went out (the client spoke HTTP/2): a forwarded connection
    /// then loses the client's acknowledgement of them (``HTTP2SettingsAckFilter``).
    private var ackFilter: HTTP2SettingsAckFilter?
    private let limit: Int
    private let timeout: TimeAmount
    private let silentTimeout: TimeAmount
    private let enabled: Bool
    private var timer: Scheduled<Void>?
    private var silentTimer: Scheduled<Void>?

    /// The verdict given at once, without inspection (nil: inspect when enabled).
    private let forced: ForwardReason?
    /// Asked when the connection becomes active (with its remote and local addresses): `true`
    /// forwards it at once as ``ForwardReason/speaksFirstPort`` (a port that speaks first, and a
    /// connection that is not a known probe's).
    private let speaksFirst: (@Sendable (_ remote: SocketAddress?, _ local: SocketAddress?) -> Bool)?

    /// - Parameters:
    ///   - forward: forward every connection at once with this reason (connections that are known
    ///     not to be probes).
    ///   - speaksFirst: decides at accept whether the connection goes to the application without
    ///     inspection (decision 0055); nil inspects every connection.
    init(
        configuration: ActivatorConfiguration,
        forward: ForwardReason? = nil,
        speaksFirst: (@Sendable (_ remote: SocketAddress?, _ local: SocketAddress?) -> Bool)? = nil
    ) {
        self.limit = configuration.probeBufferSize
        self.timeout = TimeAmount(configuration.inspectionTimeout)
        self.silentTimeout = TimeAmount(configuration.silentClientTimeout)
        self.enabled = configuration.probeDetection
        self.forced = forward
        self.speaksFirst = speaksFirst
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        guard case .waitingForActive = state else { return }
        if let forced {
            decide(.forward(forced), buffered: nil, context: context)
            return
        }
        guard enabled else {
            decide(.forward(.probeDetectionDisabled), buffered: nil, context: context)
            return
        }
        if let speaksFirst, speaksFirst(context.channel.remoteAddress, context.channel.localAddress) {
            decide(.forward(.speaksFirstPort), buffered: nil, context: context)
            return
        }
        state = .inspecting(context.channel.allocator.buffer(capacity: 0))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = bound.value
            handler.timeoutFired(context: context)
        }
        silentTimer = context.eventLoop.scheduleTask(in: silentTimeout) {
            let (handler, context) = bound.value
            handler.silentTimeoutFired(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        silentTimer?.cancel()
        silentTimer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        switch state {
        case .decided:
            if var filter = ackFilter, !filter.isDone {
                incoming = filter.filter(incoming)
                ackFilter = filter
                if incoming.readableBytes == 0 { return }
            }
            context.fireChannelRead(wrapInboundOut(.bytes(incoming)))
        case .waitingForActive:
            // Not expected (reads follow activation); treat as a connection we cannot inspect.
            decide(.forward(.notAProbe), buffered: incoming, context: context)
        case .inspecting(var buffered):
            buffered.writeBuffer(&incoming)
            if ackFilter == nil, HTTP2ServerPreface.startsWithClientPreface(buffered) {
                // gRPC clients wait for the server's SETTINGS before they send a call's HEADERS.
                ackFilter = HTTP2SettingsAckFilter()
                context.writeAndFlush(
                    NIOAny(context.channel.allocator.buffer(bytes: HTTP2ServerPreface.settings)),
                    promise: nil
                )
            }
            // Only the first `limit` bytes are inspected; all of them are forwarded.
            let inspected = buffered.getSlice(at: buffered.readerIndex, length: min(limit, buffered.readableBytes))
            switch ProbeClassifier.classify(inspected ?? buffered) {
            case .httpProbe:
                decide(.answer(.http), buffered: nil, context: context)
            case .grpcHealthCheck(let streamID):
                decide(.answer(.grpc(streamID: streamID)), buffered: nil, context: context)
            case .notAProbe:
                decide(.forward(.notAProbe), buffered: buffered, context: context)
            case .needMoreData where buffered.readableBytes >= limit:
                decide(.forward(.bufferFull), buffered: buffered, context: context)
            case .needMoreData:
                state = .inspecting(buffered)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(ChannelEvent.inputClosed) = event as? ChannelEvent {
            clientStoppedSending(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        clientStoppedSending(context: context)
        context.fireChannelInactive()
    }

    /// EOF or close while inspecting: nothing sent = a TCP probe; something = forward it.
    private func clientStoppedSending(context: ChannelHandlerContext) {
        switch state {
        case .inspecting(let buffered) where buffered.readableBytes == 0:
            decide(.answer(.tcp), buffered: nil, context: context)
        case .inspecting(let buffered):
            decide(.forward(.clientClosedEarly), buffered: buffered, context: context)
        case .waitingForActive:
            decide(.answer(.tcp), buffered: nil, context: context)
        case .decided:
            break
        }
    }

    /// Nothing arrived and the client did not close: it waits for the server to speak first.
    private func silentTimeoutFired(context: ChannelHandlerContext) {
        silentTimer = nil
        guard case .inspecting(let buffered) = state, buffered.readableBytes == 0 else { return }
        decide(.forward(.silentClient), buffered: nil, context: context)
    }

    private func timeoutFired(context: ChannelHandlerContext) {
        timer = nil
        guard case .inspecting(let buffered) = state else { return }
        decide(.forward(.inspectionTimeout), buffered: buffered, context: context)
    }

    private func decide(_ verdict: InspectionVerdict, buffered: ByteBuffer?, context: ChannelHandlerContext) {
        state = .decided
        timer?.cancel()
        timer = nil
        silentTimer?.cancel()
        silentTimer = nil
        context.fireChannelRead(wrapInboundOut(.verdict(verdict)))
        var forwarded = buffered
        if var filter = ackFilter, let bytes = forwarded {
            forwarded = filter.filter(bytes)
            ackFilter = filter
        }
        if let forwarded, forwarded.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(.bytes(forwarded)))
        }
        context.fireChannelReadComplete()
    }
}

@available(*, unavailable)
extension ProbeInspector: Sendable {}

extension TimeAmount {
    /// Converts a Swift `Duration` (clamped at zero) to NIO's nanosecond `TimeAmount`.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let total = nanos.overflow ? Int64.max : nanos.partialValue &+ attoseconds / 1_000_000_000
        self = .nanoseconds(max(0, total))
    }
}
