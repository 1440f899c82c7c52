import NIOCore
import NIOHPACK
import ZPCore

/// The bytes the activator answers probes with. Pure: builds buffers, writes nothing.
public enum ProbeResponses {
    /// The answer to a `kube-probe/` HTTP request: 204 No Content, as the original zeropod
    /// answers (any 2xx/3xx passes a kubelet HTTP probe), then the connection is closed.
    public static let httpNoContent = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"

    /// The encoded gRPC `HealthCheckResponse{status: SERVING}` (field 1, enum value 1).
    public static func healthCheckServingMessage() -> [UInt8] {
        var writer = ProtobufWriter()
        writer.writeInt32(field: 1, 1)
        return writer.bytes
    }

    /// The server side of a gRPC health check answered with SERVING, as HTTP/2 frames, after the
    /// server's SETTINGS that the activator sent when the client preface arrived
    /// (``HTTP2ServerPreface``): SETTINGS ACK (for the client's SETTINGS), HEADERS
    /// (`:status 200`, `content-type application/grpc`), DATA (5-byte gRPC prefix + message),
    /// HEADERS trailers (`grpc-status 0`, END_STREAM) and GOAWAY (NO_ERROR).
    /// - Parameters:
    ///   - streamID: the client's stream that carried the health check.
    ///   - allocator: allocates the buffer.
    /// - Throws: only if NIOHPACK fails to encode the fixed headers (a bug).
    public static func grpcServing(streamID: UInt32, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var out = allocator.buffer(capacity: 128)
        writeFrame(&out, type: 0x4, flags: 0x1, stream: 0, payload: allocator.buffer(capacity: 0))

        var encoder = HPACKEncoder(allocator: allocator, useHuffmanEncoding: false)
        var headerBlock = allocator.buffer(capacity: 64)
        try encoder.encode(
            headers: HPACKHeaders([(":status", "200"), ("content-type", "application/grpc")]),
            to: &headerBlock
        )
        writeFrame(&out, type: 0x1, flags: 0x4, stream: streamID, payload: headerBlock)

        let message = healthCheckServingMessage()
        var data = allocator.buffer(capacity: 5 + message.count)
        data.writeInteger(UInt8(0))  // not compressed
        data.writeInteger(UInt32(message.count))
        data.writeBytes(message)
        writeFrame(&out, type: 0x0, flags: 0, stream: streamID, payload: data)

        var trailerBlock = allocator.buffer(capacity: 32)
        try encoder.encode(headers: HPACKHeaders([("grpc-status", "0")]), to: &trailerBlock)
        writeFrame(&out, type: 0x1, flags: 0x5, stream: streamID, payload: trailerBlock)

        var goAway = allocator.buffer(capacity: 8)
        goAway.writeInteger(streamID & 0x7fff_ffff)
        goAway.writeInteger(UInt32(0))  // NO_ERROR
        writeFrame(&out, type: 0x7, flags: 0, stream: 0, payload: goAway)
        return out
    }

    private static func writeFrame(
        _ out: inout ByteBuffer,
        type: UInt8,
        flags: UInt8,
        stream: UInt32,
        payload: ByteBuffer
    ) {
        let length = UInt32(payload.readableBytes)
        out.writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        out.writeInteger(UInt16(truncatingIfNeeded: length))
        out.writeInteger(type)
        out.writeInteger(flags)
        out.writeInteger(stream & 0x7fff_ffff)
        out.writeImmutableBuffer(payload)
    }
}
