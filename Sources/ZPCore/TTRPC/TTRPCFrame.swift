// The ttrpc frame codec (containerd/ttrpc PROTOCOL.md): a 10-byte header, then the payload.
// Pure: the transport (SwiftNIO) hands bytes in and takes bytes out.

/// The kind of a ttrpc frame.
public enum TTRPCMessageType: UInt8, Sendable {
    case request = 0x01
    case response = 0x02
    case data = 0x03
}

/// Flag bits of a ttrpc frame header.
public struct TTRPCFlags: OptionSet, Sendable, Hashable {
    /// The flag byte.
    public let rawValue: UInt8
    /// Flags from the header byte.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Request/data: the sender will send nothing more on this stream.
    public static let remoteClosed = TTRPCFlags(rawValue: 0x01)
    /// Request: the sender keeps the stream open for data frames.
    public static let remoteOpen = TTRPCFlags(rawValue: 0x02)
    /// Data: the frame carries no payload.
    public static let noData = TTRPCFlags(rawValue: 0x04)
}

/// One ttrpc frame.
public struct TTRPCFrame: Sendable, Equatable {
    /// The stream: odd for client-initiated streams.
    public var streamID: UInt32
    /// The raw type byte; `type` is nil for values other than request/response/data, which
    /// a receiver must ignore rather than treat as an error.
    public var rawType: UInt8
    /// The header's flag byte.
    public var flags: TTRPCFlags
    /// The bytes after the header (a protobuf message for requests and responses).
    public var payload: [UInt8]

    /// The frame type, or nil for an unknown type byte.
    public var type: TTRPCMessageType? { TTRPCMessageType(rawValue: rawType) }

    /// A frame of a known type.
    public init(streamID: UInt32, type: TTRPCMessageType, flags: TTRPCFlags = [], payload: [UInt8]) {
        self.streamID = streamID
        rawType = type.rawValue
        self.flags = flags
        self.payload = payload
    }

    /// A frame with any type byte (as decoded).
    public init(streamID: UInt32, rawType: UInt8, flags: TTRPCFlags, payload: [UInt8]) {
        self.streamID = streamID
        self.rawType = rawType
        self.flags = flags
        self.payload = payload
    }
}

/// Errors of the ttrpc frame codec.
public enum TTRPCFrameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The header announces more than `TTRPCFrameCodec.maximumPayloadSize` bytes
    /// (ttrpc answers this with ResourceExhausted and closes).
    case frameTooLarge(length: UInt32, streamID: UInt32)

    /// A message naming the stream and the announced length.
    public var description: String {
        switch self {
        case .frameTooLarge(let length, let id):
            return
                "ttrpc: frame on stream \(id) announces \(length) bytes, over the \(TTRPCFrameCodec.maximumPayloadSize)-byte limit"
        }
    }
}

/// Encodes frames and decodes a byte stream into frames.
public enum TTRPCFrameCodec {
    /// Size of the fixed header: u32 length, u32 stream id, u8 type, u8 flags, big-endian.
    public static let headerSize = 10
    /// Largest payload ttrpc accepts (4 MiB).
    public static let maximumPayloadSize = 4 << 20

    /// The frame's bytes.
    /// - Throws: `TTRPCFrameError.frameTooLarge` when the payload is over 4 MiB.
    public static func encode(_ frame: TTRPCFrame) throws(TTRPCFrameError) -> [UInt8] {
        guard frame.payload.count <= maximumPayloadSize else {
            throw .frameTooLarge(length: UInt32(clamping: frame.payload.count), streamID: frame.streamID)
        }
        var out: [UInt8] = []
        out.reserveCapacity(headerSize + frame.payload.count)
        appendBigEndian(UInt32(frame.payload.count), to: &out)
        appendBigEndian(frame.streamID, to: &out)
        out.append(frame.rawType)
        out.append(frame.flags.rawValue)
        out.append(contentsOf: frame.payload)
        return out
    }

    private static func appendBigEndian(_ v: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v >> 24))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v))
    }
}

/// Incremental decoder: feed bytes as they arrive, take whole frames out.
public struct TTRPCFrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    /// An empty decoder.
    public init() {}

    /// Bytes received but not yet returned as a frame.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds received bytes; call `nextFrame()` until it returns nil.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil when more bytes are needed.
    /// - Throws: `TTRPCFrameError.frameTooLarge` as soon as a header announces an oversized payload;
    ///   the stream cannot be resynchronised after that and must be closed.
    public mutating func nextFrame() throws(TTRPCFrameError) -> TTRPCFrame? {
        let available = buffer.count - start
        guard available >= TTRPCFrameCodec.headerSize else { return nil }
        func u32(_ at: Int) -> UInt32 {
            UInt32(buffer[at]) << 24 | UInt32(buffer[at + 1]) << 16 | UInt32(buffer[at + 2]) << 8
                | UInt32(buffer[at + 3])
        }
        let length = u32(start)
        let streamID = u32(start + 4)
        guard length <= UInt32(TTRPCFrameCodec.maximumPayloadSize) else {
            throw .frameTooLarge(length: length, streamID: streamID)
        }
        let total = TTRPCFrameCodec.headerSize + Int(length)
        guard available >= total else { return nil }
        let rawType = buffer[start + 8]
        let flags = TTRPCFlags(rawValue: buffer[start + 9])
        let payload = Array(buffer[(start + TTRPCFrameCodec.headerSize)..<(start + total)])
        start += total
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        return TTRPCFrame(streamID: streamID, rawType: rawType, flags: flags, payload: payload)
    }
}
