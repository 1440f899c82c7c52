// libFuzzer target: the protobuf reader and the ttrpc envelope messages (scripts/fuzz.sh).
import FuzzSupport
import ZPCore

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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProtobufDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    walk(bytes[...], depth: 8)
    checkRoundTripEqual(TTRPCRequest.self, bytes)
    checkRoundTripEqual(TTRPCResponse.self, bytes)
    checkRoundTripEqual(RPCStatus.self, bytes)
    checkRoundTripEqual(ProtobufAny.self, bytes)
    checkRoundTripEqual(ProtobufTimestamp.self, bytes)
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzProtobuf_main` as `main`): libFuzzer's driver on ``fuzzProtobufDecoder(_:_:)``.
@_cdecl("FuzzProtobuf_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzProtobufDecoder($0, size) } ?? 0 }
}
