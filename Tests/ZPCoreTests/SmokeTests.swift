import Testing

@testable import ZPCore

@Test func varintRoundTrip_negativeInt32_isTenBytes() throws {
    var w = ProtobufWriter()
    w.writeInt32(field: 1, -1)
    #expect(w.bytes == [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
    var r = ProtobufReader(w.bytes)
    let f = try #require(try r.nextField())
    #expect(try f.int32(in: "t") == -1)
}
