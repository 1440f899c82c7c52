import NIOCore
import Testing

@testable import ZPActivator

/// The client's acknowledgement of the activator's SETTINGS is removed from a forwarded HTTP/2
/// stream, whatever the chunking; nothing else changes.
struct HTTP2SettingsAckFilterTests {
    private func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8] = []) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags]
            + [UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)]
            + payload
    }

    private var preface: [UInt8] { ProbeClassifier.http2Preface }

    /// Runs `input` through a fresh filter in chunks of `size` bytes.
    private func filtered(_ input: [UInt8], chunk size: Int) -> (bytes: [UInt8], done: Bool) {
        var filter = HTTP2SettingsAckFilter()
        var out: [UInt8] = []
        var offset = 0
        while offset < input.count {
            let end = min(input.count, offset + size)
            out += Array(filter.filter(ByteBuffer(bytes: input[offset..<end])).readableBytesView)
            offset = end
        }
        return (out, filter.isDone)
    }

    @Test func grpcClientStream_losesOnlyTheAck_atEveryChunkSize() {
        let settings = frame(type: 0x4, payload: [0, 3, 0, 0, 0, 100, 0, 4, 0, 0x40, 0, 0])
        let windowUpdate = frame(type: 0x8, payload: [0, 0x0f, 0, 1])
        let ack = frame(type: 0x4, flags: 0x1)
        let headers = frame(type: 0x1, flags: 0x4, stream: 1, payload: Array(repeating: 0x82, count: 40))
        let data = frame(type: 0x0, flags: 0x1, stream: 1, payload: [0, 0, 0, 0, 0])
        let laterAck = frame(type: 0x4, flags: 0x1)  // the client acknowledging the app's SETTINGS
        let input = preface + settings + windowUpdate + ack + headers + data + laterAck
        let expected = preface + settings + windowUpdate + headers + data + laterAck
        for size in 1...input.count {
            let result = filtered(input, chunk: size)
            #expect(result.bytes == expected, "chunks of \(size)")
            #expect(result.done)
        }
    }

    @Test func clientThatSendsHeadersFirst_losesTheLaterAck() {
        // A client that does not wait (NIOHTTP2): HEADERS before it acknowledges.
        let input =
            preface + frame(type: 0x4) + frame(type: 0x1, flags: 0x5, stream: 1, payload: [0x83, 0x86])
            + frame(type: 0x4, flags: 0x1) + frame(type: 0x6, payload: Array(repeating: 7, count: 8))
        let expected =
            preface + frame(type: 0x4) + frame(type: 0x1, flags: 0x5, stream: 1, payload: [0x83, 0x86])
            + frame(type: 0x6, payload: Array(repeating: 7, count: 8))
        for size in [1, 2, 5, 9, 24, 33, input.count] {
            #expect(filtered(input, chunk: size).bytes == expected, "chunks of \(size)")
        }
    }

    @Test func noAck_passesEverything_andKeepsWalking() {
        let input = preface + frame(type: 0x4) + frame(type: 0x1, flags: 0x4, stream: 1, payload: [1, 2, 3])
        let result = filtered(input, chunk: 7)
        #expect(result.bytes == input)
        #expect(!result.done)
    }
}
