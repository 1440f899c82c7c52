// Malformed protobuf input: every error path of ProtobufReader and the proto2 helpers.
import Testing

@testable import ZPCore

private func decodeAll(_ bytes: [UInt8]) throws(ProtobufError) -> [ProtobufField] {
    var r = ProtobufReader(bytes)
    var out: [ProtobufField] = []
    while let f = try r.nextField() { out.append(f) }
    return out
}

@Test(
    arguments: [
        ([0x80] as [UInt8], ProtobufError.truncated(offset: 0)),  // tag cut inside its varint
        ([0x08], .truncated(offset: 1)),  // varint value missing
        ([0x08, 0x96], .truncated(offset: 1)),  // varint value cut
        ([0x0d, 0x01, 0x02, 0x03], .truncated(offset: 1)),  // fixed32 needs 4 bytes
        ([0x09, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07], .truncated(offset: 1)),  // fixed64 needs 8 bytes
        ([0x0a], .truncated(offset: 1)),  // length missing
        ([0x0a, 0x05, 0x61, 0x62], .truncated(offset: 1)),  // body shorter than length
        ([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], .truncated(offset: 1)),  // 4 GiB length
        ([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], .truncated(offset: 1)),  // 2^64-1
        ([0x08] + Array(repeating: 0xff, count: 10) + [0x01], .malformedVarint(offset: 1)),  // 11 bytes
        ([0x08] + Array(repeating: 0xff, count: 9) + [0x02], .malformedVarint(offset: 1)),  // over 64 bits
        ([0x0e, 0x00], .invalidWireType(6, offset: 0)),
        ([0x0f, 0x00], .invalidWireType(7, offset: 0)),
        ([0x00, 0x00], .invalidFieldNumber(0, offset: 0)),
        ([0x80, 0x80, 0x80, 0x80, 0x10, 0x00], .invalidFieldNumber(1 << 29, offset: 0)),
        ([0x0c], .unbalancedGroup(offset: 0)),  // end group without start
        ([0x0b, 0x14], .unbalancedGroup(offset: 1)),  // group 1 closed as 2
        ([0x0b, 0x08, 0x01], .truncated(offset: 3)),  // group never closed
        ([0x0b, 0x12, 0x05, 0x61], .truncated(offset: 2)),  // truncated inside group
    ] as [([UInt8], ProtobufError)]
)
func reader_malformedInput_throwsTheExactError(bytes: [UInt8], error: ProtobufError) {
    #expect(throws: error) { try decodeAll(bytes) }
}

@Test func reader_nestedGroups_areBoundedByMaximumDepth() throws {
    let depth = ProtobufReader.maximumGroupDepth
    func nested(_ n: Int) -> [UInt8] { Array(repeating: 0x0b, count: n) + Array(repeating: 0x0c, count: n) }
    let fields = try decodeAll(nested(depth))
    #expect(fields.count == 1 && fields[0].wireType == .startGroup)
    #expect(throws: ProtobufError.nestingTooDeep(offset: depth)) { try decodeAll(nested(depth + 1)) }
    // Hostile input: a million start-group tags must fail fast, not recurse.
    #expect(throws: ProtobufError.nestingTooDeep(offset: depth)) {
        try decodeAll(Array(repeating: 0x0b, count: 1_000_000))
    }
}

@Test func reader_everyStrictPrefixOfAGoldenMessage_failsOrStopsAtAFieldBoundary() throws {
    let golden = try Fixtures.bytes("alltypes_full.bin")
    var boundaries: Set<Int> = [0]
    var r = ProtobufReader(golden)
    var consumed = 0
    while let f = try r.nextField() {
        consumed += ProtobufWriter.encodedSize(of: f)
        boundaries.insert(consumed)
    }
    #expect(consumed == golden.count)
    var failures = 0
    for n in 0..<golden.count {
        do {
            _ = try AllTypes(decoding: Array(golden.prefix(n)))
            #expect(boundaries.contains(n), "prefix \(n) decoded although it ends inside a field")
        } catch {
            failures += 1
            #expect(!boundaries.contains(n), "prefix \(n) ends at a field boundary but failed: \(error)")
            switch error {
            case .truncated, .missingRequiredField: break
            default: Issue.record("prefix \(n): unexpected \(error)")
            }
        }
    }
    #expect(failures > golden.count / 2)
}

@Test func required_missingField_isReported() throws {
    // Inner{label: "a"} without its required id.
    #expect(throws: ProtobufError.missingRequiredField(message: "zptest.Inner", field: 1)) {
        try Inner(decoding: [0x12, 0x01, 0x61])
    }
    // Also when the Inner is nested in AllTypes (field 17) or repeated (field 20).
    #expect(throws: ProtobufError.missingRequiredField(message: "zptest.Inner", field: 1)) {
        try AllTypes(decoding: [0x8a, 0x01, 0x03, 0x12, 0x01, 0x61])
    }
    #expect(throws: ProtobufError.missingRequiredField(message: "zptest.Inner", field: 1)) {
        try AllTypes(decoding: [0xa2, 0x01, 0x00])
    }
    var required = RequiredFields(message: "m", required: [3, 1, 2])
    required.saw(2)
    #expect(throws: ProtobufError.missingRequiredField(message: "m", field: 1)) { try required.check() }
    required.saw(1)
    required.saw(3)
    try required.check()
    #expect(try Inner(decoding: [0x08, 0x00]) == Inner(id: 0))
}

@Test func typedViews_refuseWrongWireTypesAndBadValues() throws {
    // google.protobuf.Any field 1 is a string: AllTypes' varint field 1 does not fit.
    #expect(throws: ProtobufError.wrongWireType(message: "google.protobuf.Any", field: 1, got: .varint)) {
        try ProtobufAny(decoding: Fixtures.bytes("alltypes_full.bin"))
    }
    #expect(throws: ProtobufError.wrongWireType(message: "zptest.AllTypes", field: 7, got: .varint)) {
        try AllTypes(decoding: [0x38, 0x01])
    }
    #expect(throws: ProtobufError.invalidUTF8(message: "zptest.AllTypes", field: 14)) {
        try AllTypes(decoding: [0x72, 0x02, 0xc3, 0x28])
    }
    #expect(throws: ProtobufError.invalidValue(message: "zptest.AllTypes", field: 16, value: 7)) {
        try AllTypes(decoding: [0x80, 0x01, 0x07])
    }
    // A packed fixed32 body that is not a multiple of 4 bytes.
    #expect(throws: ProtobufError.truncated(offset: 4)) {
        try AllTypes(decoding: [0xb2, 0x01, 0x06, 1, 0, 0, 0, 2, 0])
    }
    #expect(throws: ProtobufError.wrongWireType(message: "zptest.AllTypes", field: 22, got: .varint)) {
        try AllTypes(decoding: [0xb0, 0x01, 0x01])
    }
}

@Test func unknownFields_ofEveryWireType_areSkipped() throws {
    // Reading the full golden AllTypes with a reader that knows only field 14 (text) skips the
    // 28 other fields: varints, fixed32/64, nested messages, packed bodies and the 5-byte tag.
    let golden = try Fixtures.bytes("alltypes_full.bin")
    var r = ProtobufReader(golden)
    var text: String?
    var skipped = 0
    while let f = try r.nextField() {
        if f.number == 14 { text = try f.string(in: "t") } else { skipped += 1 }
    }
    #expect(text == "héllo ✓")
    #expect(skipped == 28)
    // Unpacked values for packed fields (a parser must accept both forms).
    var w = ProtobufWriter()
    w.writeSInt64(field: 19, -5)
    w.writeFixed32(field: 22, 9)
    w.writeInt32(field: 23, 2)
    w.writeFixed64(field: 24, 0.25.bitPattern)
    let m = try AllTypes(decoding: w.bytes)
    #expect(m.packedS64 == [-5] && m.packedF32 == [9] && m.colors == [.green] && m.packedDbl == [0.25])
    // A ttrpc Request carrying fields from a newer schema still decodes.
    var future = ProtobufWriter(reservingCapacity: 64)
    future.writeString(field: 1, "svc")
    future.writeFixed64(field: 99, 1)
    future.appendTag(field: 100, wireType: .startGroup)
    future.writeString(field: 1, "inside")
    future.appendTag(field: 100, wireType: .endGroup)
    future.writeString(field: 2, "m")
    let request = try TTRPCRequest(decoding: future.bytes)
    #expect(request.service == "svc" && request.method == "m")
}

extension ProtobufWriter {
    /// The number of bytes `field` occupies on the wire (tag included), by re-encoding it.
    static func encodedSize(of field: ProtobufField) -> Int {
        var w = ProtobufWriter()
        switch field.value {
        case .varint(let v): w.writeUInt64(field: field.number, v)
        case .fixed32(let v): w.writeFixed32(field: field.number, v)
        case .fixed64(let v): w.writeFixed64(field: field.number, v)
        case .lengthDelimited(let b): w.writeBytes(field: field.number, b)
        case .group(let b):
            w.appendTag(field: field.number, wireType: .startGroup)
            w.appendRawBytes(b)
            w.appendTag(field: field.number, wireType: .endGroup)
        }
        return w.bytes.count
    }
}
