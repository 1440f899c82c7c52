// Invariants shared by the protobuf message fuzz targets.
import ZPCore

/// Decodes `M` from `bytes`; when that works, checks that the message survives a round trip:
/// the re-encoded bytes decode again, and encoding is then stable
/// (`encode(decode(encode(m))) == encode(m)`). Unknown fields are dropped by the first decode, so
/// only the second encoding must equal the first.
/// - Returns: whether `bytes` decoded.
@discardableResult
public func checkRoundTrip<M: ProtobufMessage>(_: M.Type, _ bytes: [UInt8]) -> Bool {
    guard let message = try? M(decoding: bytes) else { return false }
    let once = message.encoded()
    guard let again = try? M(decoding: once) else { preconditionFailure("\(M.self): re-encoded bytes do not decode") }
    precondition(again.encoded() == once, "\(M.self): encoding is not stable")
    return true
}

/// ``checkRoundTrip(_:_:)`` plus equality of the decoded messages.
@discardableResult
public func checkRoundTripEqual<M: ProtobufMessage & Equatable>(_: M.Type, _ bytes: [UInt8]) -> Bool {
    guard let message = try? M(decoding: bytes) else { return false }
    let once = message.encoded()
    guard let again = try? M(decoding: once) else { preconditionFailure("\(M.self): re-encoded bytes do not decode") }
    precondition(again == message, "\(M.self): decode(encode(m)) != m")
    precondition(again.encoded() == once, "\(M.self): encoding is not stable")
    return true
}

/// The input as UTF-8 text when it is valid UTF-8, else nil (decoders of text see what a file
/// reader would give them: `String(decoding:)` repairs bad bytes, so both forms are fuzzed).
public func utf8Text(_ bytes: [UInt8]) -> String? {
    let text = String(decoding: bytes, as: UTF8.self)
    return Array(text.utf8) == bytes ? text : nil
}
