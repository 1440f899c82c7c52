// libFuzzer target: the protobuf reader and the ttrpc envelope messages (scripts/fuzz.sh).
// Compiled together with the ZPCore sources into one module, so no `import ZPCore`.
//
// Invariants checked on every input, beyond "does not crash":
// - a message that decodes re-encodes to bytes that decode to an equal message, and encoding is
//   then stable (encode(decode(encode(m))) == encode(m));
// - the reader never reports a field past the input and always terminates.

/// Walks every field and nested length-delimited body as a message, up to `depth` levels.
private func walk(_ bytes: ArraySlice<UInt8>, depth: Int) {
    var r = ProtobufReader(bytes)
    var fields = 0
    while true {
        let field: ProtobufField?
        do { field = try r.nextField() } catch { return }
        guard let f = field else { return }
        fields += 1
        precondition(fields <= bytes.count, "more fields than bytes")
        _ = try? f.uint64(in: "fuzz")
        _ = try? f.int32(in: "fuzz")
        _ = try? f.sint32(in: "fuzz")
        _ = try? f.sint64(in: "fuzz")
        _ = try? f.bool(in: "fuzz")
        _ = try? f.fixed32(in: "fuzz")
        _ = try? f.double(in: "fuzz")
        _ = try? f.string(in: "fuzz")
        _ = try? f.packedVarints(in: "fuzz")
        _ = try? f.packedFixed32(in: "fuzz")
        _ = try? f.packedFixed64(in: "fuzz")
        switch f.value {
        case .lengthDelimited(let body), .group(let body):
            precondition(body.startIndex >= bytes.startIndex && body.endIndex <= bytes.endIndex, "field outside input")
            if depth > 0 { walk(body, depth: depth - 1) }
        case .varint, .fixed32, .fixed64: break
        }
    }
}

/// Decodes `M`; when that works, checks the re-encoding invariants.
private func roundTrip<M: ProtobufMessage & Equatable>(_: M.Type, _ bytes: [UInt8]) {
    guard let m = try? M(decoding: bytes) else { return }
    let once = m.encoded()
    guard let again = try? M(decoding: once) else { preconditionFailure("\(M.self): re-encoded bytes do not decode") }
    precondition(again == m, "\(M.self): decode(encode(m)) != m")
    precondition(again.encoded() == once, "\(M.self): encoding is not stable")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtobufDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    walk(bytes[...], depth: 8)
    roundTrip(TTRPCRequest.self, bytes)
    roundTrip(TTRPCResponse.self, bytes)
    roundTrip(RPCStatus.self, bytes)
    roundTrip(ProtobufAny.self, bytes)
    roundTrip(ProtobufTimestamp.self, bytes)
    return 0
}
