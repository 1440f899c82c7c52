import NIOCore
import NIOHPACK

/// The kinds of kubelet probe the activator answers without restoring the application.
public enum ProbeKind: String, Sendable, Equatable, CustomStringConvertible {
    /// A TCP probe: connect, send nothing, close.
    case tcp
    /// An HTTP/1.x request whose `User-Agent` starts with `kube-probe/`.
    case http
    /// A gRPC health check (`/grpc.health.v1.Health/Check`) over cleartext HTTP/2.
    case grpcHealth

    /// The raw value.
    public var description: String { rawValue }
}

/// What the first bytes of a connection are, as far as probe detection is concerned.
public enum ProbeClassification: Sendable, Equatable {
    /// The bytes so far may still become a probe: read more (up to the inspection limit).
    case needMoreData
    /// A complete HTTP/1.x request head with a `kube-probe/` user agent.
    case httpProbe
    /// An HTTP/2 HEADERS block for the gRPC health check on `streamID`.
    case grpcHealthCheck(streamID: UInt32)
    /// Anything else: forward the connection to the application, bytes untouched.
    case notAProbe
}

/// Classifies the first bytes a client sent. Pure: no I/O, no state between calls (each call
/// re-parses the whole, at most `probe-buffer-size` long, prefix).
///
/// HTTP/1.x is parsed by hand (request line and header names only); the HTTP/2 frame layout is
/// parsed by hand too (RFC 9113 §4.1), but the header block is decoded with NIOHPACK, because
/// real gRPC clients use Huffman coding and the dynamic table.
public enum ProbeClassifier {
    /// The HTTP/2 client connection preface (RFC 9113 §3.4).
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// The `:path` of the gRPC health check.
    public static let grpcHealthCheckPath = "/grpc.health.v1.Health/Check"
    private static let kubeProbePrefix: [UInt8] = Array("kube-probe/".utf8)
    private static let userAgent: [UInt8] = Array("user-agent".utf8)
    private static let maximumMethodLength = 16

    /// Classifies `bytes`, the start of what the client sent.
    /// - Parameter bytes: everything read so far (not consumed).
    /// - Returns: the verdict, or ``ProbeClassification/needMoreData`` if more bytes could change it.
    public static func classify(_ bytes: ByteBuffer) -> ProbeClassification {
        let view = bytes.readableBytesView
        if view.isEmpty { return .needMoreData }
        let prefixLength = min(view.count, http2Preface.count)
        if view.prefix(prefixLength).elementsEqual(http2Preface.prefix(prefixLength)) {
            if view.count < http2Preface.count { return .needMoreData }
            var rest = bytes
            rest.moveReaderIndex(forwardBy: http2Preface.count)
            return classifyHTTP2Frames(rest)
        }
        return classifyHTTP1(Array(view))
    }

    // MARK: HTTP/1.x

    private static func classifyHTTP1(_ bytes: [UInt8]) -> ProbeClassification {
        // Request line: METHOD SP target SP HTTP/1.x CRLF. Methods are upper-case tokens.
        var index = 0
        while index < bytes.count, bytes[index] != UInt8(ascii: " ") {
            let byte = bytes[index]
            guard byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z") else { return .notAProbe }
            index += 1
            if index > maximumMethodLength { return .notAProbe }
        }
        if index == bytes.count { return .needMoreData }
        if index == 0 { return .notAProbe }

        guard let firstLineEnd = find([13, 10], in: bytes, from: index) else { return .needMoreData }
        let requestLine = bytes[index..<firstLineEnd]
        guard find(Array(" HTTP/1.".utf8), in: Array(requestLine), from: 0) != nil else { return .notAProbe }
        guard let headEnd = find([13, 10, 13, 10], in: bytes, from: firstLineEnd) else { return .needMoreData }

        var lineStart = firstLineEnd + 2
        while lineStart < headEnd + 2 {
            let lineEnd = find([13, 10], in: bytes, from: lineStart) ?? headEnd
            let line = bytes[lineStart..<lineEnd]
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                let name = line[line.startIndex..<colon]
                if name.count == userAgent.count,
                    zip(name, userAgent).allSatisfy({ asciiLowercase($0) == $1 })
                {
                    let value = line[(colon + 1)...].drop(while: { $0 == 32 || $0 == 9 })
                    return value.starts(with: kubeProbePrefix) ? .httpProbe : .notAProbe
                }
            }
            lineStart = lineEnd + 2
        }
        return .notAProbe
    }

    private static func asciiLowercase(_ byte: UInt8) -> UInt8 {
        (byte >= 65 && byte <= 90) ? byte + 32 : byte
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard needle.count <= haystack.count, start <= haystack.count - needle.count else { return nil }
        var i = start
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0], haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    // MARK: HTTP/2

    private enum FrameType: UInt8 {
        case data = 0x0, headers = 0x1, continuation = 0x9
    }

    private static let flagEndHeaders: UInt8 = 0x4
    private static let flagPadded: UInt8 = 0x8
    private static let flagPriority: UInt8 = 0x20

    /// Walks the frames after the preface up to the first complete header block.
    private static func classifyHTTP2Frames(_ input: ByteBuffer) -> ProbeClassification {
        var buffer = input
        var block: ByteBuffer?
        var blockStream: UInt32 = 0
        while true {
            guard buffer.readableBytes >= 9,
                let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self).map({ $0 >> 8 }),
                let type = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt8.self),
                let flags = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self),
                let rawStream = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self)
            else { return .needMoreData }
            let stream = rawStream & 0x7fff_ffff
            guard buffer.readableBytes >= 9 + Int(length) else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: 9)
            guard var payload = buffer.readSlice(length: Int(length)) else { return .needMoreData }

            switch FrameType(rawValue: type) {
            case .headers:
                guard block == nil, stream != 0 else { return .notAProbe }
                var padding = 0
                if flags & flagPadded != 0 {
                    guard let pad = payload.readInteger(as: UInt8.self) else { return .notAProbe }
                    padding = Int(pad)
                }
                if flags & flagPriority != 0 {
                    guard payload.readSlice(length: 5) != nil else { return .notAProbe }
                }
                guard padding <= payload.readableBytes,
                    let fragment = payload.readSlice(length: payload.readableBytes - padding)
                else { return .notAProbe }
                block = fragment
                blockStream = stream
            case .continuation:
                guard var pending = block, stream == blockStream else { return .notAProbe }
                pending.writeImmutableBuffer(payload)
                block = pending
            case .data:
                // DATA before any HEADERS is a protocol error; not our business: forward.
                if block == nil { return .notAProbe }
            case .none:
                break  // SETTINGS, WINDOW_UPDATE, PRIORITY, PING, ...: skipped.
            }

            if var complete = block, type == FrameType.headers.rawValue || type == FrameType.continuation.rawValue,
                flags & flagEndHeaders != 0
            {
                return classifyGRPCHeaders(&complete, streamID: blockStream)
            }
        }
    }

    private static func classifyGRPCHeaders(_ block: inout ByteBuffer, streamID: UInt32) -> ProbeClassification {
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        guard let headers = try? decoder.decodeHeaders(from: &block) else { return .notAProbe }
        guard headers.first(name: ":path") == grpcHealthCheckPath,
            headers.first(name: "content-type")?.hasPrefix("application/grpc") == true
        else { return .notAProbe }
        return .grpcHealthCheck(streamID: streamID)
    }
}
