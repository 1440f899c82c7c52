import Testing
import ZPCore

// ProtobufFieldTable: a message described once, field by field, encodes like the writer calls it
// stands for, decodes back, skips unknown fields and names the message in errors.

private struct Sample: ProtobufTableMessage, Equatable {
    var name = ""
    var tags: [String] = []
    var on = false
    var small: UInt32 = 0
    var big: UInt64 = 0
    var signed: Int32 = 0
    var wide: Int64 = 0
    var when: ProtobufTimestamp?
    var always = ProtobufTimestamp(seconds: 0, nanos: 0)
    var items: [ProtobufAny] = []
    var level = 0

    static let fields = ProtobufFieldTable<Sample>(
        "zptest.Sample",
        [
            .string(1, \.name),
            .strings(2, \.tags),
            .bool(3, \.on),
            .uint32(4, \.small),
            .uint64(5, \.big),
            .int32(6, \.signed),
            .int64(7, \.wide),
            .message(8, \.when),
            .message(9, \.always),
            .messages(10, \.items),
            .custom(
                11,
                write: { m, n, w in w.writeUInt32IfNotDefault(field: n, UInt32(m.level)) },
                read: { m, f, name throws(ProtobufError) in m.level = Int(try f.uint32(in: name)) }
            ),
        ]
    )
}

@Test func fieldTable_encodesLikeTheWriterCalls_andDecodesBack() throws {
    var s = Sample()
    s.name = "n"
    s.tags = ["a", "", "b"]
    s.on = true
    s.small = 7
    s.big = 1 << 40
    s.signed = -3
    s.wide = -1 << 40
    s.when = ProtobufTimestamp(seconds: 5, nanos: 6)
    s.items = [ProtobufAny(typeURL: "t", value: [1]), ProtobufAny(typeURL: "", value: [])]
    s.level = 2
    var w = ProtobufWriter()
    w.writeStringIfNotDefault(field: 1, "n")
    for t in ["a", "", "b"] { w.writeString(field: 2, t) }
    w.writeBoolIfNotDefault(field: 3, true)
    w.writeUInt32IfNotDefault(field: 4, 7)
    w.writeUInt64IfNotDefault(field: 5, 1 << 40)
    w.writeInt32IfNotDefault(field: 6, -3)
    w.writeInt64IfNotDefault(field: 7, -1 << 40)
    w.writeMessage(field: 8, ProtobufTimestamp(seconds: 5, nanos: 6))
    w.writeMessage(field: 9, ProtobufTimestamp(seconds: 0, nanos: 0))
    w.writeMessage(field: 10, ProtobufAny(typeURL: "t", value: [1]))
    w.writeMessage(field: 10, ProtobufAny(typeURL: "", value: []))
    w.writeUInt32IfNotDefault(field: 11, 2)
    #expect(s.encoded() == w.bytes)
    #expect(try Sample(decoding: w.bytes) == s)
    // Defaults are omitted, except the always-written message (an empty one: tag and length 0).
    #expect(Sample().encoded() == [0x4A, 0x00])
    #expect(try Sample(decoding: [UInt8]()) == Sample())
}

@Test func fieldTable_skipsUnknownFields_andNamesTheMessageInErrors() throws {
    var w = ProtobufWriter()
    w.writeString(field: 99, "future")
    w.writeStringIfNotDefault(field: 1, "kept")
    w.writeFixed64(field: 100, 1)
    #expect(try Sample(decoding: w.bytes).name == "kept")
    var wrong = ProtobufWriter()
    wrong.writeString(field: 3, "not a bool")
    #expect(throws: ProtobufError.wrongWireType(message: "zptest.Sample", field: 3, got: .lengthDelimited)) {
        try Sample(decoding: wrong.bytes)
    }
    #expect(throws: ProtobufError.self) { try Sample(decoding: [0x0A, 0x05, 0x61]) }  // a string cut short
}
