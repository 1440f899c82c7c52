// The ttrpc frame codec: header layout, incremental decoding with split delivery, the 4 MiB limit.
import Testing

@testable import ZPCore

@Test func frame_header_isBigEndianLengthStreamTypeFlags() throws {
    let frame = TTRPCFrame(
        streamID: 0x0102_0304,
        type: .request,
        flags: [.remoteClosed, .noData],
        payload: [0xaa, 0xbb, 0xcc]
    )
    let bytes = try TTRPCFrameCodec.encode(frame)
    #expect(bytes == [0, 0, 0, 3, 0x01, 0x02, 0x03, 0x04, 0x01, 0x05, 0xaa, 0xbb, 0xcc])
    var d = TTRPCFrameDecoder()
    d.append(bytes)
    #expect(try d.nextFrame() == frame)
    #expect(try d.nextFrame() == nil)
    #expect(d.bufferedByteCount == 0)
}

@Test func frame_carryingAGoldenRequest_roundTrips() throws {
    let payload = try Fixtures.bytes("ttrpc_request.bin")
    let bytes = try TTRPCFrameCodec.encode(TTRPCFrame(streamID: 1, type: .request, payload: payload))
    #expect(Array(bytes.prefix(10)) == [0, 0, 0, UInt8(payload.count), 0, 0, 0, 1, 1, 0])
    var d = TTRPCFrameDecoder()
    d.append(bytes)
    let frame = try #require(try d.nextFrame())
    #expect(frame.type == .request && frame.streamID == 1)
    let request = try TTRPCRequest(decoding: frame.payload)
    #expect(request.service == "containerd.task.v2.Task" && request.method == "Create")
}

@Test func frame_unknownType_isPassedThroughWithNilType() throws {
    var d = TTRPCFrameDecoder()
    d.append([0, 0, 0, 0, 0, 0, 0, 9, 0x7f, 0x00])
    let frame = try #require(try d.nextFrame())
    #expect(frame.rawType == 0x7f && frame.type == nil && frame.streamID == 9 && frame.payload.isEmpty)
}

@Test(arguments: [11, 12, 13] as [UInt64])
func frame_splitDelivery_atRandomPoints_yieldsTheSameFrames(seed: UInt64) throws {
    var g = SplitMix64(seed: seed)
    let types: [TTRPCMessageType] = [.request, .response, .data]
    var frames: [TTRPCFrame] = []
    for i in 0..<200 {
        let length = Int.random(in: 0..<300, using: &g)
        var payload: [UInt8] = []
        for _ in 0..<length { payload.append(UInt8.random(in: 0...255, using: &g)) }
        frames.append(
            TTRPCFrame(
                streamID: UInt32(2 * i + 1),
                type: types[i % 3],
                flags: TTRPCFlags(rawValue: UInt8(i % 8)),
                payload: payload
            )
        )
    }
    var stream: [UInt8] = []
    for f in frames { stream += try TTRPCFrameCodec.encode(f) }
    var d = TTRPCFrameDecoder()
    var got: [TTRPCFrame] = []
    var i = 0
    while i < stream.count {
        // Chunks from 1 byte (header split) to a few frames at once.
        let sizes: [Int] = [1, 3, 9, 10, 11, Int.random(in: 1...2000, using: &g)]
        let n = min(stream.count - i, sizes[Int.random(in: 0..<sizes.count, using: &g)])
        d.append(stream[i..<(i + n)])
        i += n
        while let f = try d.nextFrame() { got.append(f) }
    }
    #expect(got == frames, "seed \(seed)")
    #expect(d.bufferedByteCount == 0)
}

@Test func frame_byteByByte_returnsNothingUntilComplete() throws {
    let bytes = try TTRPCFrameCodec.encode(TTRPCFrame(streamID: 3, type: .response, payload: [1, 2, 3, 4]))
    var d = TTRPCFrameDecoder()
    for (i, b) in bytes.enumerated() {
        d.append([b])
        if i < bytes.count - 1 {
            #expect(try d.nextFrame() == nil)
            #expect(d.bufferedByteCount == i + 1)
        }
    }
    #expect(try d.nextFrame()?.payload == [1, 2, 3, 4])
}

@Test func frame_4MiBLimit_isEnforcedOnBothSides() throws {
    let limit = TTRPCFrameCodec.maximumPayloadSize
    #expect(limit == 4 * 1024 * 1024)
    // Exactly 4 MiB: allowed.
    let big = TTRPCFrame(streamID: 5, type: .response, payload: Array(repeating: 0x5a, count: limit))
    let bytes = try TTRPCFrameCodec.encode(big)
    #expect(Array(bytes.prefix(4)) == [0x00, 0x40, 0x00, 0x00])
    var d = TTRPCFrameDecoder()
    d.append(bytes[..<(bytes.count / 2)])
    #expect(try d.nextFrame() == nil)
    d.append(bytes[(bytes.count / 2)...])
    #expect(try d.nextFrame() == big)
    // One byte more: the encoder refuses ...
    #expect(throws: TTRPCFrameError.frameTooLarge(length: UInt32(limit + 1), streamID: 7)) {
        try TTRPCFrameCodec.encode(
            TTRPCFrame(streamID: 7, type: .request, payload: Array(repeating: 0, count: limit + 1))
        )
    }
    // ... and the decoder throws as soon as the header is in, without waiting for the payload.
    var hostile = TTRPCFrameDecoder()
    hostile.append([0x00, 0x40, 0x00, 0x01, 0, 0, 0, 9, 1])
    #expect(try hostile.nextFrame() == nil)
    hostile.append([0])
    #expect(throws: TTRPCFrameError.frameTooLarge(length: UInt32(limit + 1), streamID: 9)) { try hostile.nextFrame() }
    var maximal = TTRPCFrameDecoder()
    maximal.append([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 2, 0])
    #expect(throws: TTRPCFrameError.frameTooLarge(length: .max, streamID: 1)) { try maximal.nextFrame() }
    #expect(
        TTRPCFrameError.frameTooLarge(length: 4_194_305, streamID: 9).description
            == "ttrpc: frame on stream 9 announces 4194305 bytes, over the 4194304-byte limit"
    )
}
