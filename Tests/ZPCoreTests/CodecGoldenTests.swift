// The protobuf codec against golden bytes made by `protoc --encode` (Fixtures/, scripts/golden.sh).
import Testing

@testable import ZPCore

// MARK: - the values the .txtpb files spell

private func expectedAllTypesFull() -> AllTypes {
    var m = AllTypes()
    m.i32 = -42
    m.i64 = -9_000_000_000
    m.u32 = .max
    m.u64 = .max
    m.s32 = .min
    m.s64 = .min
    m.f32 = .max
    m.f64 = .max
    m.sf32 = -5
    m.sf64 = -6
    m.flt = 1.5
    m.dbl = -2.25e-300
    m.flag = true
    m.text = "héllo ✓"
    m.blob = [0, 1, 255]
    m.color = .negative
    m.inner = Inner(id: -7, label: "x")
    m.repI32 = [1, -1, 300]
    m.packedS64 = [0, -1, 1, .min, .max]
    m.items = [Inner(id: 1), Inner(id: 2, label: "two")]
    m.names = ["a", ""]
    m.packedF32 = [0, 1, .max]
    m.colors = [.red, .negative, .green]
    m.packedDbl = [0.5, -0.0, 1e300]
    m.maxField = 1
    return m
}

private func expectedAllTypesZeroValues() -> AllTypes {
    var m = AllTypes()
    m.i32 = 0
    m.i64 = 0
    m.u32 = 0
    m.u64 = 0
    m.s32 = 0
    m.s64 = 0
    m.f32 = 0
    m.f64 = 0
    m.sf32 = 0
    m.sf64 = 0
    m.flt = 0
    m.dbl = 0
    m.flag = false
    m.text = ""
    m.blob = []
    m.color = .unspecified
    m.inner = Inner(id: 0)
    return m
}

private func expectedAllTypesNegativeEdges() -> AllTypes {
    var m = AllTypes()
    m.i32 = -1
    m.i64 = -1
    m.s32 = -1
    m.s64 = -1
    m.sf32 = .min
    m.sf64 = .min
    m.flt = -.infinity
    m.dbl = .infinity
    m.color = .negative
    m.inner = Inner(id: .min, label: "")
    m.repI32 = [.min]
    m.maxField = -1
    return m
}

/// Encodes `value`, compares with the golden file byte for byte, decodes the golden file and
/// compares with `value`, and re-encodes the decoded value.
private func checkGolden<M: ProtobufMessage & Equatable>(_ name: String, _ value: M) throws {
    let golden = try Fixtures.bytes("\(name).bin")
    #expect(value.encoded() == golden, "\(name): our encoding differs from protoc's")
    let decoded = try M(decoding: golden)
    #expect(decoded == value, "\(name): decoded \(decoded)")
    #expect(decoded.encoded() == golden, "\(name): re-encoding differs")
}

@Test func golden_allTypes_encodeAndDecodeByteForByte() throws {
    try checkGolden("alltypes_full", expectedAllTypesFull())
    try checkGolden("alltypes_zero_values", expectedAllTypesZeroValues())
    try checkGolden("alltypes_empty", AllTypes())
    try checkGolden("alltypes_negative_edges", expectedAllTypesNegativeEdges())
    #expect(try Fixtures.bytes("alltypes_empty.bin").isEmpty)
}

@Test func golden_negativeInt32_isSignExtendedToTenBytes() throws {
    let golden = try Fixtures.bytes("alltypes_negative_edges.bin")
    // i32 = -1: tag 0x08 then ten bytes, as protoc writes it.
    #expect(Array(golden.prefix(11)) == [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
    // A five-byte (non sign-extended) form of -1 decodes too.
    var r = ProtobufReader([0x08, 0xff, 0xff, 0xff, 0xff, 0x0f])
    #expect(try r.nextField()?.int32(in: "t") == -1)
}

@Test func golden_ttrpcMessages_encodeAndDecodeByteForByte() throws {
    let createPayload: [UInt8] = [0x0a, 0x02] + Array("id".utf8) + [0x12, 0x06] + Array("bundle".utf8)
    try checkGolden(
        "ttrpc_request",
        TTRPCRequest(
            service: "containerd.task.v2.Task",
            method: "Create",
            payload: createPayload,
            timeoutNanoseconds: 5_000_000_000,
            metadata: [("containerd-namespace", "k8s.io"), ("containerd-namespace", "second"), ("", "empty key")]
        )
    )
    try checkGolden(
        "ttrpc_request_minimal",
        TTRPCRequest(service: "zeropod.shim.v1.Shim", method: "GetStatus", payload: [])
    )
    try checkGolden("ttrpc_response_ok", TTRPCResponse(payload: [0x08, 0x01]))
    try checkGolden(
        "ttrpc_response_error",
        TTRPCResponse(
            status: RPCStatus(
                code: .notFound,
                message: #"container "web" not found"#,
                details: [
                    ProtobufAny(
                        typeURL: "type.googleapis.com/google.protobuf.StringValue",
                        value: [0x0a, 0x03] + Array("web".utf8)
                    )
                ]
            )
        )
    )
    var negative = RPCStatus(code: .ok, message: "negative")
    negative.code = -3
    try checkGolden("rpc_status_negative_code", negative)
    #expect(try RPCStatus(decoding: Fixtures.bytes("rpc_status_negative_code.bin")).statusCode == nil)
    let request = try TTRPCRequest(decoding: Fixtures.bytes("ttrpc_request.bin"))
    #expect(request.metadataValue("containerd-namespace") == "k8s.io")
}

@Test func golden_groups_areSkippedAsUnknownFields() throws {
    let golden = try Fixtures.bytes("with_group.bin")
    let m = try WithGroupAB(decoding: golden)
    #expect(m.a == 150)
    #expect(m.b == "after the group")
    // The same bytes built with the writer's primitives: start-group 2, x, nested group 4, r, end.
    var w = ProtobufWriter()
    w.writeInt32(field: 1, 150)
    w.appendTag(field: 2, wireType: .startGroup)
    var body = ProtobufWriter()
    body.writeInt32(field: 3, -3)
    body.appendTag(field: 4, wireType: .startGroup)
    body.writeString(field: 5, "deep")
    body.appendTag(field: 4, wireType: .endGroup)
    body.writeFixed64(field: 6, 1)
    body.writeFixed64(field: 6, 2)
    w.appendRawBytes(body.bytes)
    w.appendTag(field: 2, wireType: .endGroup)
    w.writeFixed32(field: 4, 7)
    w.writeString(field: 7, "after the group")
    #expect(w.bytes == golden)
    #expect(m.skippedGroup.map(Array.init) == body.bytes)
}

// MARK: - protoc itself

@Test func golden_committedBytesStillMatchProtoc() throws {
    let cases = try Fixtures.goldenList()
    #expect(cases.count >= 10)
    for c in cases {
        let text = try Fixtures.bytes("\(c.name).txtpb")
        let fresh = try Fixtures.protoc(["--encode=\(c.message)", c.proto], input: text)
        #expect(fresh == (try Fixtures.bytes("\(c.name).bin")), "\(c.name).bin is stale: run scripts/golden.sh")
    }
}

@Test(arguments: [1, 2, 3] as [UInt64])
func random_allTypesThroughProtoc_reencodesToTheSameBytes(seed: UInt64) throws {
    // protoc decodes our bytes to text and encodes the text again: any difference in field
    // order, varint width, zigzag, packing or float bits shows up as different bytes.
    var g = SplitMix64(seed: seed)
    let batch = Batch(items: (0..<150).map { _ in AllTypes.random(using: &g) })
    let ours = batch.encoded()
    let text = try Fixtures.protoc(["--decode=zptest.Batch", "codec_test.proto"], input: ours)
    let theirs = try Fixtures.protoc(["--encode=zptest.Batch", "codec_test.proto"], input: text)
    #expect(theirs == ours, "seed \(seed)")
    #expect(try Batch(decoding: theirs) == batch, "seed \(seed)")
}

// MARK: - round trips

@Test func random_allTypes_roundTrip() throws {
    let seed: UInt64 = 0x5eed_2026
    var g = SplitMix64(seed: seed)
    for i in 0..<3000 {
        let m = AllTypes.random(using: &g, finiteOnly: i % 2 == 0)
        let bytes = m.encoded()
        let back = try AllTypes(decoding: bytes)
        #expect(back == m, "seed \(seed) message \(i)")
        if back != m { break }
    }
}

@Test func random_varintsAndZigzag_roundTrip() throws {
    var g = SplitMix64(seed: 42)
    var w = ProtobufWriter()
    var values: [UInt64] = [0, 1, 127, 128, 16383, 16384, .max, .max - 1, 1 << 63]
    for _ in 0..<5000 { values.append(g.next() >> UInt64.random(in: 0..<64, using: &g)) }
    for v in values { w.appendVarint(v) }
    var r = ProtobufReader(w.bytes)
    for v in values { #expect(try r.readVarint() == v) }
    #expect(r.isAtEnd)
    for v in values {
        let s = Int64(bitPattern: v)
        #expect(Zigzag.decode64(Zigzag.encode64(s)) == s)
        let s32 = Int32(truncatingIfNeeded: s)
        #expect(Zigzag.decode32(Zigzag.encode32(s32)) == s32)
    }
    #expect(Zigzag.encode32(-1) == 1 && Zigzag.encode32(1) == 2 && Zigzag.encode32(.min) == .max)
    #expect(Zigzag.encode64(-1) == 1 && Zigzag.encode64(.max) == .max - 1)
}

@Test func random_ttrpcEnvelopes_roundTrip() throws {
    var g = SplitMix64(seed: 7)
    func string() -> String {
        String((0..<Int.random(in: 0..<10, using: &g)).map { _ in "aé✓/.".randomElement(using: &g)! })
    }
    for _ in 0..<1000 {
        let request = TTRPCRequest(
            service: string(),
            method: string(),
            payload: (0..<Int.random(in: 0..<40, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) },
            timeoutNanoseconds: Int64(bitPattern: g.next()) >> Int64.random(in: 0..<64, using: &g),
            metadata: (0..<Int.random(in: 0..<3, using: &g)).map { _ in (string(), string()) }
        )
        #expect(try TTRPCRequest(decoding: request.encoded()) == request)
        let status: RPCStatus? =
            Bool.random(using: &g)
            ? nil
            : {
                var s = RPCStatus(
                    code: .ok,
                    message: string(),
                    details: [ProtobufAny(typeURL: string(), value: [1, 2])]
                )
                s.code = Int32(truncatingIfNeeded: g.next())
                return s
            }()
        let response = TTRPCResponse(status: status, payload: Array(string().utf8))
        #expect(try TTRPCResponse(decoding: response.encoded()) == response)
    }
}
