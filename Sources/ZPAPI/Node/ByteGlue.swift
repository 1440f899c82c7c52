import NIOCore

/// One side of a byte relay between two channels: forwards what its channel reads to its
/// partner's channel, and holds what arrives before it has a partner. When its channel ends,
/// `onEnd` runs (the owner closes both sides). Used by the two ends of a live migration's page
/// transfer: the manager's mutual-TLS page-server proxy and the shim's page relay (decisions
/// 0058, 0063). Event-loop confined, like every channel handler.
package final class ByteGlue: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private var partner: ByteGlue?
    private var context: ChannelHandlerContext?
    private var held: [ByteBuffer] = []
    /// Runs once when its channel ends.
    package var onEnd: (() -> Void)?
    /// Runs once when its channel becomes active.
    package var onActive: (() -> Void)?

    /// A side without a partner yet.
    package init() {}

    /// Makes `a` and `b` partners and hands over what each held.
    package static func pair(_ a: ByteGlue, _ b: ByteGlue) {
        a.partner = b
        b.partner = a
        for buffer in a.held { b.forward(buffer) }
        for buffer in b.held { a.forward(buffer) }
        a.held = []
        b.held = []
        a.context?.flush()
        b.context?.flush()
    }

    private func forward(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    package func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let partner { partner.forward(buffer) } else { held.append(buffer) }
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    package func channelActive(context: ChannelHandlerContext) {
        let active = onActive
        onActive = nil
        context.fireChannelActive()
        active?()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        onEnd?()
        onEnd = nil
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
