// libFuzzer target: the activator's HTTP/2 path (scripts/fuzz.sh): the hand-written frame walk
// (RFC 9113 §4.1: SETTINGS, WINDOW_UPDATE, HEADERS with CONTINUATION, padding, priority) and the
// gRPC health check test on the decoded header block (NIOHPACK).
//
// Every input starts with the HTTP/2 client preface. The first byte picks the mode: raw (the rest
// is the frame stream as sent) or built (the rest is split at NUL bytes into header names and
// values, HPACK-encoded into a HEADERS frame, optionally split with CONTINUATION, and followed by
// the remaining bytes raw), so that the header block path is reached with well-formed HPACK as
// often as with garbage. Invariant: as for HTTP/1, a final verdict never changes with more bytes.
import FuzzSupport
import NIOCore
import NIOHPACK
import ZPActivator

private let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// A frame: 24-bit length, type, flags, 31-bit stream id, payload.
private func frame(_ type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
    let n = payload.count
    return [
        UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
        UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff),
    ] + payload
}

/// The built mode: headers from the input, HPACK-encoded.
private func built(_ mode: UInt8, _ rest: ArraySlice<UInt8>) -> [UInt8] {
    var parts = rest.split(separator: 0, maxSplits: 16, omittingEmptySubsequences: false).map {
        String(decoding: $0, as: UTF8.self)
    }
    let tail = parts.count > 16 ? Array(parts.removeLast().utf8) : []
    var headers: [(String, String)] = []
    // Bit 1: start with the health check's pseudo-headers (the probe itself, then what follows varies).
    if mode & 2 != 0 {
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
            ("content-type", "application/grpc"),
        ]
    }
    var i = 0
    while i + 1 < parts.count {
        headers.append((parts[i].lowercased(), parts[i + 1]))
        i += 2
    }
    var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: mode & 4 != 0)
    var block = ByteBuffer()
    guard (try? encoder.encode(headers: HPACKHeaders(headers), to: &block)) != nil else { return preface + tail }
    let blockBytes = Array(block.readableBytesView)
    let stream = UInt32(mode >> 4) * 2 + 1
    var out = preface + frame(0x4, flags: 0, stream: 0, [0, 2, 0, 0, 0, 0])  // SETTINGS ENABLE_PUSH=0
    if mode & 8 != 0, blockBytes.count > 1 {
        let half = blockBytes.count / 2
        out += frame(0x1, flags: 0, stream: stream, Array(blockBytes[..<half]))
        out += frame(0x9, flags: 0x4, stream: stream, Array(blockBytes[half...]))
    } else {
        out += frame(0x1, flags: 0x4, stream: stream, blockBytes)
    }
    return out + tail
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProbeGRPC(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let mode = bytes[0]
    let stream = mode & 1 == 0 ? preface + bytes.dropFirst(2) : built(mode, bytes.dropFirst(2))
    let whole = ProbeClassifier.classify(ByteBuffer(bytes: stream))
    let cut = Int(bytes[1]) * stream.count / 255
    let prefix = ProbeClassifier.classify(ByteBuffer(bytes: stream.prefix(cut)))
    if prefix != .needMoreData {
        precondition(prefix == whole, "verdict \(prefix) after \(cut) bytes, \(whole) after \(stream.count)")
    }
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzProbeGRPC_main` as `main`): libFuzzer's driver on ``fuzzProbeGRPC(_:_:)``.
@_cdecl("FuzzProbeGRPC_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzProbeGRPC($0, size) } ?? 0 }
}
