// A hand-written protobuf wire codec (docs/decisions/0001-protobuf-by-hand.md): no generator, no
// generated files. Only the wire format lives here; message structs live next to their protocol
// and map fields with `encode()` / `init(decoding:)`.

/// The wire types of the protobuf encoding.
public enum ProtobufWireType: UInt8, Sendable {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// An error found while decoding protobuf bytes, or a message that breaks its schema.
public enum ProtobufError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended inside a tag, a varint, a fixed-size value or a length-delimited value.
    case truncated(offset: Int)
    /// A varint that is longer than 10 bytes or overflows 64 bits.
    case malformedVarint(offset: Int)
    /// A wire type number outside 0...5.
    case invalidWireType(UInt8, offset: Int)
    /// Field number 0, or above 2^29 - 1.
    case invalidFieldNumber(UInt64, offset: Int)
    /// An end-group tag without a start, or a group closed by another field number.
    case unbalancedGroup(offset: Int)
    /// Groups nested deeper than the decoder allows (guards the stack against hostile input).
    case nestingTooDeep(offset: Int)
    /// A field arrived with a wire type its schema does not allow.
    case wrongWireType(message: String, field: Int, got: ProtobufWireType)
    /// A proto2 `required` field is absent.
    case missingRequiredField(message: String, field: Int)
    /// A string field holds bytes that are not UTF-8.
    case invalidUTF8(message: String, field: Int)
    /// An enum or integer field carries a value its schema does not allow.
    case invalidValue(message: String, field: Int, value: Int64)

    /// A message naming the byte offset or the schema field.
    public var description: String {
        switch self {
        case .truncated(let o): return "protobuf: input truncated at byte \(o)"
        case .malformedVarint(let o): return "protobuf: malformed varint at byte \(o)"
        case .invalidWireType(let w, let o): return "protobuf: invalid wire type \(w) at byte \(o)"
        case .invalidFieldNumber(let n, let o): return "protobuf: invalid field number \(n) at byte \(o)"
        case .unbalancedGroup(let o): return "protobuf: unbalanced group at byte \(o)"
        case .nestingTooDeep(let o): return "protobuf: groups nested too deep at byte \(o)"
        case .wrongWireType(let m, let f, let w): return "protobuf: \(m) field \(f) has wrong wire type \(w)"
        case .missingRequiredField(let m, let f): return "protobuf: \(m) is missing required field \(f)"
        case .invalidUTF8(let m, let f): return "protobuf: \(m) field \(f) is not valid UTF-8"
        case .invalidValue(let m, let f, let v): return "protobuf: \(m) field \(f) has invalid value \(v)"
        }
    }
}

// MARK: - Writer

/// Appends protobuf-encoded fields to a byte buffer.
///
/// Field order is the caller's: write fields in field-number order to produce the same bytes as
/// `protoc --encode`. Every `write…` method emits the field even when the value is the default, so a
/// proto3 caller skips defaults itself (see the `…IfNotDefault` helpers) and a proto2 caller writes
/// exactly the optional fields it has set.
public struct ProtobufWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// An empty writer with room for `capacity` bytes.
    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    // MARK: primitives

    /// Appends a base-128 varint (1 to 10 bytes).
    public mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Appends bytes as they are: an already encoded field, or a group body between tags written
    /// with `appendTag(field:wireType:)`.
    public mutating func appendRawBytes<C: Collection>(_ raw: C) where C.Element == UInt8 {
        bytes.append(contentsOf: raw)
    }

    /// Appends a field key (field number and wire type).
    public mutating func appendTag(field: Int, wireType: ProtobufWireType) {
        precondition(field > 0 && field < (1 << 29), "protobuf field number \(field) out of range")
        appendVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
    }

    /// Appends 4 bytes, little-endian (the body of a `fixed32` field).
    public mutating func appendFixed32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Appends 8 bytes, little-endian (the body of a `fixed64` field).
    public mutating func appendFixed64(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    // MARK: scalar fields

    /// `uint64`, `uint32`, and enum values that are never negative.
    public mutating func writeUInt64(field: Int, _ value: UInt64) {
        appendTag(field: field, wireType: .varint)
        appendVarint(value)
    }

    /// `uint32`: a varint of at most 5 bytes.
    public mutating func writeUInt32(field: Int, _ value: UInt32) {
        writeUInt64(field: field, UInt64(value))
    }

    /// `int64`: negative values take 10 bytes (two's complement).
    public mutating func writeInt64(field: Int, _ value: Int64) {
        writeUInt64(field: field, UInt64(bitPattern: value))
    }

    /// `int32` and enums: negative values are sign-extended to 64 bits (10 bytes), as protobuf requires.
    public mutating func writeInt32(field: Int, _ value: Int32) {
        writeUInt64(field: field, UInt64(bitPattern: Int64(value)))
    }

    /// `sint32` (zigzag).
    public mutating func writeSInt32(field: Int, _ value: Int32) {
        writeUInt64(field: field, UInt64(Zigzag.encode32(value)))
    }

    /// `sint64` (zigzag).
    public mutating func writeSInt64(field: Int, _ value: Int64) {
        writeUInt64(field: field, Zigzag.encode64(value))
    }

    /// `bool`: a one-byte varint, 0 or 1.
    public mutating func writeBool(field: Int, _ value: Bool) {
        writeUInt64(field: field, value ? 1 : 0)
    }

    /// `fixed32`, `sfixed32` (via bit pattern) and `float` (via `bitPattern`).
    public mutating func writeFixed32(field: Int, _ value: UInt32) {
        appendTag(field: field, wireType: .fixed32)
        appendFixed32(value)
    }

    /// `fixed64`, `sfixed64` (via bit pattern) and `double` (via `bitPattern`).
    public mutating func writeFixed64(field: Int, _ value: UInt64) {
        appendTag(field: field, wireType: .fixed64)
        appendFixed64(value)
    }

    /// `double`: its IEEE 754 bits as `fixed64`.
    public mutating func writeDouble(field: Int, _ value: Double) {
        writeFixed64(field: field, value.bitPattern)
    }

    // MARK: length-delimited fields

    /// `bytes`: a length prefix and the bytes.
    public mutating func writeBytes<C: Collection>(field: Int, _ value: C) where C.Element == UInt8 {
        appendTag(field: field, wireType: .lengthDelimited)
        appendVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// `string`: its UTF-8 bytes, length-prefixed.
    public mutating func writeString(field: Int, _ value: String) {
        writeBytes(field: field, Array(value.utf8))
    }

    /// A nested message, written by `body` into a fresh writer and then length-prefixed.
    public mutating func writeMessage(field: Int, _ body: (inout ProtobufWriter) -> Void) {
        var nested = ProtobufWriter()
        body(&nested)
        writeBytes(field: field, nested.bytes)
    }

    /// A nested message from an already encoded body.
    public mutating func writeMessage(field: Int, encoded: [UInt8]) {
        writeBytes(field: field, encoded)
    }

    /// A packed repeated varint field (proto3 default for repeated scalars).
    /// Writes nothing when `values` is empty, like protoc.
    public mutating func writePackedVarints<S: Sequence>(field: Int, _ values: S) where S.Element == UInt64 {
        var packed = ProtobufWriter()
        for v in values { packed.appendVarint(v) }
        guard !packed.bytes.isEmpty else { return }
        writeBytes(field: field, packed.bytes)
    }

    /// A packed repeated `fixed32`, `sfixed32` (via bit pattern) or `float` (via `bitPattern`) field.
    /// Writes nothing when `values` is empty, like protoc.
    public mutating func writePackedFixed32<S: Sequence>(field: Int, _ values: S) where S.Element == UInt32 {
        var packed = ProtobufWriter()
        for v in values { packed.appendFixed32(v) }
        guard !packed.bytes.isEmpty else { return }
        writeBytes(field: field, packed.bytes)
    }

    /// A packed repeated `fixed64`, `sfixed64` (via bit pattern) or `double` (via `bitPattern`) field.
    /// Writes nothing when `values` is empty, like protoc.
    public mutating func writePackedFixed64<S: Sequence>(field: Int, _ values: S) where S.Element == UInt64 {
        var packed = ProtobufWriter()
        for v in values { packed.appendFixed64(v) }
        guard !packed.bytes.isEmpty else { return }
        writeBytes(field: field, packed.bytes)
    }

    // MARK: proto3 helpers: skip default values

    /// proto3 `uint64`: nothing for 0.
    public mutating func writeUInt64IfNotDefault(field: Int, _ value: UInt64) {
        if value != 0 { writeUInt64(field: field, value) }
    }

    /// proto3 `uint32`: nothing for 0.
    public mutating func writeUInt32IfNotDefault(field: Int, _ value: UInt32) {
        if value != 0 { writeUInt32(field: field, value) }
    }

    /// proto3 `int64`: nothing for 0.
    public mutating func writeInt64IfNotDefault(field: Int, _ value: Int64) {
        if value != 0 { writeInt64(field: field, value) }
    }

    /// proto3 `int32` or enum: nothing for 0.
    public mutating func writeInt32IfNotDefault(field: Int, _ value: Int32) {
        if value != 0 { writeInt32(field: field, value) }
    }

    /// proto3 `bool`: nothing for false.
    public mutating func writeBoolIfNotDefault(field: Int, _ value: Bool) {
        if value { writeBool(field: field, true) }
    }

    /// proto3 `string`: nothing for the empty string.
    public mutating func writeStringIfNotDefault(field: Int, _ value: String) {
        if !value.isEmpty { writeString(field: field, value) }
    }

    /// proto3 `bytes`: nothing for no bytes.
    public mutating func writeBytesIfNotDefault(field: Int, _ value: [UInt8]) {
        if !value.isEmpty { writeBytes(field: field, value) }
    }
}

/// Zigzag encoding for `sint32` / `sint64`.
public enum Zigzag {
    /// Maps `sint32` values to unsigned so small magnitudes stay short: 0, -1, 1, -2 -> 0, 1, 2, 3.
    public static func encode32(_ v: Int32) -> UInt32 { UInt32(bitPattern: (v << 1) ^ (v >> 31)) }
    /// Inverse of `encode32`.
    public static func decode32(_ v: UInt32) -> Int32 { Int32(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
    /// Maps `sint64` values to unsigned so small magnitudes stay short.
    public static func encode64(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
    /// Inverse of `encode64`.
    public static func decode64(_ v: UInt64) -> Int64 { Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
}

// MARK: - Reader

/// One decoded field: its number and its raw value.
public struct ProtobufField: Sendable {
    /// The raw value, by wire type.
    public enum Value: Sendable, Equatable {
        case varint(UInt64)
        case fixed64(UInt64)
        case lengthDelimited(ArraySlice<UInt8>)
        case fixed32(UInt32)
        /// A proto2 group: its raw bytes between the start and end tags (never interpreted here).
        case group(ArraySlice<UInt8>)
    }

    /// The field number (1 ... 2^29 - 1).
    public var number: Int
    /// The raw value.
    public var value: Value

    /// The wire type the field arrived with (`startGroup` for groups).
    public var wireType: ProtobufWireType {
        switch value {
        case .varint: return .varint
        case .fixed64: return .fixed64
        case .lengthDelimited: return .lengthDelimited
        case .fixed32: return .fixed32
        case .group: return .startGroup
        }
    }

    // MARK: typed views; `message` names the schema in errors

    /// `uint64`: the varint as is.
    /// - Throws: `ProtobufError.wrongWireType` unless the field is a varint.
    public func uint64(in message: String) throws(ProtobufError) -> UInt64 {
        guard case .varint(let v) = value else { throw .wrongWireType(message: message, field: number, got: wireType) }
        return v
    }

    /// `uint32`: the low 32 bits of the varint, as protobuf parsers do.
    public func uint32(in message: String) throws(ProtobufError) -> UInt32 {
        UInt32(truncatingIfNeeded: try uint64(in: message))
    }

    /// `int64`: the varint as two's complement.
    public func int64(in message: String) throws(ProtobufError) -> Int64 {
        Int64(bitPattern: try uint64(in: message))
    }

    /// `int32` and enums: the low 32 bits, so both 5-byte and sign-extended 10-byte forms decode.
    public func int32(in message: String) throws(ProtobufError) -> Int32 {
        Int32(truncatingIfNeeded: try uint64(in: message))
    }

    /// `sint32`: zigzag-decoded low 32 bits.
    public func sint32(in message: String) throws(ProtobufError) -> Int32 {
        Zigzag.decode32(UInt32(truncatingIfNeeded: try uint64(in: message)))
    }

    /// `sint64`: zigzag-decoded.
    public func sint64(in message: String) throws(ProtobufError) -> Int64 {
        Zigzag.decode64(try uint64(in: message))
    }

    /// `bool`: any non-zero varint is true.
    public func bool(in message: String) throws(ProtobufError) -> Bool {
        try uint64(in: message) != 0
    }

    /// `fixed32` (and `sfixed32`/`float` via bit pattern).
    /// - Throws: `ProtobufError.wrongWireType` unless the field is fixed32.
    public func fixed32(in message: String) throws(ProtobufError) -> UInt32 {
        guard case .fixed32(let v) = value else { throw .wrongWireType(message: message, field: number, got: wireType) }
        return v
    }

    /// `fixed64` (and `sfixed64` via bit pattern).
    /// - Throws: `ProtobufError.wrongWireType` unless the field is fixed64.
    public func fixed64(in message: String) throws(ProtobufError) -> UInt64 {
        guard case .fixed64(let v) = value else { throw .wrongWireType(message: message, field: number, got: wireType) }
        return v
    }

    /// `double`: the fixed64 bits as IEEE 754.
    public func double(in message: String) throws(ProtobufError) -> Double {
        Double(bitPattern: try fixed64(in: message))
    }

    /// `bytes`: a slice of the input (no copy).
    /// - Throws: `ProtobufError.wrongWireType` unless the field is length-delimited.
    public func bytes(in message: String) throws(ProtobufError) -> ArraySlice<UInt8> {
        guard case .lengthDelimited(let b) = value else {
            throw .wrongWireType(message: message, field: number, got: wireType)
        }
        return b
    }

    /// `string`: the bytes as UTF-8.
    /// - Throws: `ProtobufError.invalidUTF8` for bytes that are not UTF-8.
    public func string(in message: String) throws(ProtobufError) -> String {
        let b = try bytes(in: message)
        guard let s = String(validating: b, as: UTF8.self) else { throw .invalidUTF8(message: message, field: number) }
        return s
    }

    /// A reader over a nested message.
    public func message(in message: String) throws(ProtobufError) -> ProtobufReader {
        ProtobufReader(try bytes(in: message))
    }

    /// A repeated varint field, packed (length-delimited) or not (one varint).
    public func packedVarints(in message: String) throws(ProtobufError) -> [UInt64] {
        switch value {
        case .varint(let v): return [v]
        case .lengthDelimited(let b):
            var r = ProtobufReader(b)
            var out: [UInt64] = []
            while !r.isAtEnd { out.append(try r.readVarint()) }
            return out
        case .fixed32, .fixed64, .group:
            throw .wrongWireType(message: message, field: number, got: wireType)
        }
    }
}

extension ProtobufField {
    /// A repeated `fixed32`-sized field, packed (length-delimited) or not (one value).
    /// - Throws: `ProtobufError.truncated` when a packed body is not a multiple of 4 bytes,
    ///   `wrongWireType` for other wire types.
    public func packedFixed32(in message: String) throws(ProtobufError) -> [UInt32] {
        switch value {
        case .fixed32(let v): return [v]
        case .lengthDelimited(let b):
            var r = ProtobufReader(b)
            var out: [UInt32] = []
            out.reserveCapacity(b.count / 4)
            while !r.isAtEnd { out.append(try r.readFixed32()) }
            return out
        case .varint, .fixed64, .group:
            throw .wrongWireType(message: message, field: number, got: wireType)
        }
    }

    /// A repeated `fixed64`-sized field, packed (length-delimited) or not (one value).
    /// - Throws: `ProtobufError.truncated` when a packed body is not a multiple of 8 bytes,
    ///   `wrongWireType` for other wire types.
    public func packedFixed64(in message: String) throws(ProtobufError) -> [UInt64] {
        switch value {
        case .fixed64(let v): return [v]
        case .lengthDelimited(let b):
            var r = ProtobufReader(b)
            var out: [UInt64] = []
            out.reserveCapacity(b.count / 8)
            while !r.isAtEnd { out.append(try r.readFixed64()) }
            return out
        case .varint, .fixed32, .group:
            throw .wrongWireType(message: message, field: number, got: wireType)
        }
    }
}

/// Reads protobuf fields one at a time from a byte slice. Unknown fields are the caller's to skip:
/// `nextField()` already consumed them, so a `default:` branch that ignores the field skips it.
public struct ProtobufReader: Sendable {
    /// Deepest group nesting accepted; deeper input throws instead of recursing.
    public static let maximumGroupDepth = 64

    private let buffer: ArraySlice<UInt8>
    private var index: Int

    /// A reader over `bytes` (offsets in errors count from its start).
    public init(_ bytes: ArraySlice<UInt8>) {
        buffer = bytes
        index = bytes.startIndex
    }

    /// A reader over `bytes`.
    public init(_ bytes: [UInt8]) {
        self.init(bytes[...])
    }

    /// Whether all input has been read.
    public var isAtEnd: Bool { index >= buffer.endIndex }

    /// Offset from the start of the input, for error messages.
    private var offset: Int { index - buffer.startIndex }

    /// Reads a base-128 varint.
    /// - Throws: `truncated` when the input ends inside it, `malformedVarint` past 10 bytes or 64 bits.
    public mutating func readVarint() throws(ProtobufError) -> UInt64 {
        let start = offset
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard index < buffer.endIndex else { throw .truncated(offset: start) }
            let byte = buffer[index]
            index += 1
            if shift == 63 && byte > 1 { throw .malformedVarint(offset: start) }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw .malformedVarint(offset: start) }
        }
    }

    private mutating func readFixed<T: FixedWidthInteger>(_: T.Type) throws(ProtobufError) -> T {
        let size = MemoryLayout<T>.size
        guard buffer.endIndex - index >= size else { throw .truncated(offset: offset) }
        var v: T = 0
        for i in 0..<size { v |= T(buffer[index + i]) << (8 * i) }
        index += size
        return v
    }

    /// Reads a little-endian 4-byte value (the body of a `fixed32` field).
    public mutating func readFixed32() throws(ProtobufError) -> UInt32 { try readFixed(UInt32.self) }

    /// Reads a little-endian 8-byte value (the body of a `fixed64` field).
    public mutating func readFixed64() throws(ProtobufError) -> UInt64 { try readFixed(UInt64.self) }

    private mutating func readLengthDelimited() throws(ProtobufError) -> ArraySlice<UInt8> {
        let start = offset
        let length = try readVarint()
        guard length <= UInt64(buffer.endIndex - index) else { throw .truncated(offset: start) }
        let end = index + Int(length)
        defer { index = end }
        return buffer[index..<end]
    }

    private mutating func readTag() throws(ProtobufError) -> (Int, ProtobufWireType) {
        let start = offset
        let key = try readVarint()
        guard let wt = ProtobufWireType(rawValue: UInt8(key & 7)) else {
            throw .invalidWireType(UInt8(key & 7), offset: start)
        }
        let number = key >> 3
        guard number > 0 && number < (1 << 29) else { throw .invalidFieldNumber(number, offset: start) }
        return (Int(number), wt)
    }

    /// Skips a group body up to and including the end tag for `number`; returns the body.
    private mutating func skipGroup(number: Int) throws(ProtobufError) -> ArraySlice<UInt8> {
        let bodyStart = index
        var open: [Int] = [number]
        while true {
            let tagStart = index
            if isAtEnd { throw .truncated(offset: offset) }
            let (n, wt) = try readTag()
            switch wt {
            case .varint: _ = try readVarint()
            case .fixed64: _ = try readFixed(UInt64.self)
            case .fixed32: _ = try readFixed(UInt32.self)
            case .lengthDelimited: _ = try readLengthDelimited()
            case .startGroup:
                guard open.count < Self.maximumGroupDepth else {
                    throw .nestingTooDeep(offset: tagStart - buffer.startIndex)
                }
                open.append(n)
            case .endGroup:
                guard open.last == n else { throw .unbalancedGroup(offset: tagStart - buffer.startIndex) }
                open.removeLast()
                if open.isEmpty { return buffer[bodyStart..<tagStart] }
            }
        }
    }

    /// The next field, or nil at the end of the input.
    /// - Throws: `ProtobufError` for malformed input; the reader is then unusable.
    public mutating func nextField() throws(ProtobufError) -> ProtobufField? {
        if isAtEnd { return nil }
        let start = offset
        let (number, wt) = try readTag()
        switch wt {
        case .varint: return ProtobufField(number: number, value: .varint(try readVarint()))
        case .fixed64: return ProtobufField(number: number, value: .fixed64(try readFixed(UInt64.self)))
        case .fixed32: return ProtobufField(number: number, value: .fixed32(try readFixed(UInt32.self)))
        case .lengthDelimited: return ProtobufField(number: number, value: .lengthDelimited(try readLengthDelimited()))
        case .startGroup: return ProtobufField(number: number, value: .group(try skipGroup(number: number)))
        case .endGroup: throw .unbalancedGroup(offset: start)
        }
    }
}

/// Helps proto2 decoders check `required` fields: mark each field as seen, then `check`.
public struct RequiredFields: Sendable {
    private let message: String
    private var missing: Set<Int>

    /// Tracks `required` field numbers of `message` (named in the error).
    public init(message: String, required: Set<Int>) {
        self.message = message
        missing = required
    }

    /// Records that `field` was present.
    public mutating func saw(_ field: Int) { missing.remove(field) }

    /// Throws `missingRequiredField` for the lowest required field not seen.
    public func check() throws(ProtobufError) {
        if let first = missing.min() { throw .missingRequiredField(message: message, field: first) }
    }
}

/// A message that encodes to and decodes from protobuf bytes.
public protocol ProtobufMessage: Sendable {
    /// Encodes the message's fields (without a length prefix).
    func encode(into writer: inout ProtobufWriter)
    /// Decodes a message; unknown fields are skipped.
    init(decoding reader: inout ProtobufReader) throws(ProtobufError)
}

extension ProtobufMessage {
    /// The message's bytes.
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        encode(into: &w)
        return w.bytes
    }

    /// Decodes a whole buffer as one message.
    public init(decoding bytes: [UInt8]) throws(ProtobufError) {
        var r = ProtobufReader(bytes)
        try self.init(decoding: &r)
    }

    /// Decodes a slice as one message.
    public init(decoding bytes: ArraySlice<UInt8>) throws(ProtobufError) {
        var r = ProtobufReader(bytes)
        try self.init(decoding: &r)
    }
}

extension ProtobufWriter {
    /// A nested message field.
    public mutating func writeMessage<M: ProtobufMessage>(field: Int, _ message: M) {
        writeBytes(field: field, message.encoded())
    }
}
