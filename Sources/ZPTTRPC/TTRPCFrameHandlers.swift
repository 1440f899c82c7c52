import NIOCore
import ZPCore

/// Turns the bytes of a stream socket into ``TTRPCFrame`` values with ZPCore's `TTRPCFrameDecoder`.
///
/// The codec lives in ZPCore; this handler only feeds it. An oversized frame closes the channel,
/// because the stream cannot be resynchronised after a bad header.
final class TTRPCFrameDecodingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = TTRPCFrame

    private var decoder = TTRPCFrameDecoder()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        decoder.append(buffer.readableBytesView)
        do {
            while let frame = try decoder.nextFrame() {
                context.fireChannelRead(wrapInboundOut(frame))
            }
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension TTRPCFrameDecodingHandler: Sendable {}

/// Encodes outbound ``TTRPCFrame`` values with ZPCore's `TTRPCFrameCodec`.
final class TTRPCFrameEncodingHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = TTRPCFrame
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        do {
            let bytes = try TTRPCFrameCodec.encode(frame)
            var buffer = context.channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            context.write(wrapOutboundOut(buffer), promise: promise)
        } catch {
            promise?.fail(error)
        }
    }
}

@available(*, unavailable)
extension TTRPCFrameEncodingHandler: Sendable {}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the ttrpc frame decoder and encoder.
    func addTTRPCFrameHandlers() throws {
        try addHandler(TTRPCFrameDecodingHandler())
        try addHandler(TTRPCFrameEncodingHandler())
    }
}
