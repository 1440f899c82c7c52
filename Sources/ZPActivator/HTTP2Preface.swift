import NIOCore

/// What the activator does about the server side of an HTTP/2 connection it inspects.
///
/// A gRPC client (grpc-go, which kubelet's prober uses, and gRPC C-core) sends the connection
/// preface and its SETTINGS, then waits for the server's SETTINGS before it sends the HEADERS of
/// a call; the activator, which needs the HEADERS to recognise a health check, therefore sends the
/// server's SETTINGS (empty: every setting at its default) as soon as the client preface is
/// complete. RFC 9113 §3.4 makes that frame the first one a server sends.
///
/// If the connection is then forwarded to the application, the application sends SETTINGS of its
/// own (a later SETTINGS frame is allowed at any time) and acknowledges the client's SETTINGS
/// itself, but it must never see the client's acknowledgement of the activator's SETTINGS: an
/// acknowledgement with no SETTINGS outstanding is a connection error for several servers (Go's
/// net/http, nghttp2). ``HTTP2SettingsAckFilter`` removes exactly that frame.
enum HTTP2ServerPreface {
    /// An empty SETTINGS frame on stream 0.
    static let settings: [UInt8] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0]

    /// Whether `bytes` begin with the complete client connection preface.
    static func startsWithClientPreface(_ bytes: ByteBuffer) -> Bool {
        bytes.readableBytesView.starts(with: ProbeClassifier.http2Preface)
    }
}

/// Removes the first SETTINGS frame with the ACK flag from the client's side of a forwarded HTTP/2
/// connection (the client's acknowledgement of the activator's SETTINGS, see
/// ``HTTP2ServerPreface``); every other byte passes unchanged and in order. It walks the frame
/// headers after the 24-byte client preface until that frame was removed, then passes everything
/// through without looking. Pure: feed it the client's bytes in the order they arrived, in chunks
/// of any size.
struct HTTP2SettingsAckFilter: Sendable {
    private enum State: Sendable {
        case preface(remaining: Int)
        case header(ByteBuffer)
        case payload(remaining: Int)
        case dropping(remaining: Int)
        case passThrough
    }

    private var state = State.preface(remaining: ProbeClassifier.http2Preface.count)

    /// Whether the acknowledgement has been removed (everything passes from now on).
    var isDone: Bool {
        if case .passThrough = state { return true }
        return false
    }

    /// The bytes of `input` that go on to the application.
    mutating func filter(_ input: ByteBuffer) -> ByteBuffer {
        var input = input
        if case .passThrough = state { return input }
        var out = ByteBuffer()
        out.reserveCapacity(input.readableBytes)
        while input.readableBytes > 0 {
            switch state {
            case .passThrough:
                out.writeBuffer(&input)
            case .preface(let remaining):
                let count = min(remaining, input.readableBytes)
                var part = input.readSlice(length: count)!
                out.writeBuffer(&part)
                state = remaining == count ? .header(ByteBuffer()) : .preface(remaining: remaining - count)
            case .header(var partial):
                var part = input.readSlice(length: min(9 - partial.readableBytes, input.readableBytes))!
                partial.writeBuffer(&part)
                guard partial.readableBytes == 9 else {
                    state = .header(partial)
                    continue
                }
                let length = Int(partial.getInteger(at: partial.readerIndex, as: UInt32.self)! >> 8)
                let type = partial.getInteger(at: partial.readerIndex + 3, as: UInt8.self)!
                let flags = partial.getInteger(at: partial.readerIndex + 4, as: UInt8.self)!
                if type == 0x4 && flags & 0x1 != 0 {
                    state = length == 0 ? .passThrough : .dropping(remaining: length)
                } else {
                    out.writeBuffer(&partial)
                    state = length == 0 ? .header(ByteBuffer()) : .payload(remaining: length)
                }
            case .payload(let remaining):
                let count = min(remaining, input.readableBytes)
                var part = input.readSlice(length: count)!
                out.writeBuffer(&part)
                state = remaining == count ? .header(ByteBuffer()) : .payload(remaining: remaining - count)
            case .dropping(let remaining):
                let count = min(remaining, input.readableBytes)
                input.moveReaderIndex(forwardBy: count)
                state = remaining == count ? .passThrough : .dropping(remaining: remaining - count)
            }
        }
        return out
    }
}
