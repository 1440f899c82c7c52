// Hand-written mappings of Fixtures/codec_test.proto (package zptest, proto2), written the way
// production messages are: encode() in field-number order, init(decoding:) skipping unknown fields.
@testable import ZPCore

enum Color: Int32, CaseIterable {
    case unspecified = 0
    case red = 1
    case green = 2
    case negative = -1
}

struct Inner: ProtobufMessage, Equatable {
    var id: Int32
    var label: String?

    init(id: Int32, label: String? = nil) {
        self.id = id
        self.label = label
    }

    func encode(into w: inout ProtobufWriter) {
        w.writeInt32(field: 1, id)
        if let label { w.writeString(field: 2, label) }
    }

    init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        var required = RequiredFields(message: "zptest.Inner", required: [1])
        id = 0
        label = nil
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                id = try f.int32(in: "zptest.Inner")
                required.saw(1)
            case 2: label = try f.string(in: "zptest.Inner")
            default: break
            }
        }
        try required.check()
    }
}

struct AllTypes: ProtobufMessage, Equatable {
    static let name = "zptest.AllTypes"
    var i32: Int32?
    var i64: Int64?
    var u32: UInt32?
    var u64: UInt64?
    var s32: Int32?
    var s64: Int64?
    var f32: UInt32?
    var f64: UInt64?
    var sf32: Int32?
    var sf64: Int64?
    var flt: Float?
    var dbl: Double?
    var flag: Bool?
    var text: String?
    var blob: [UInt8]?
    var color: Color?
    var inner: Inner?
    var repI32: [Int32] = []
    var packedS64: [Int64] = []
    var items: [Inner] = []
    var names: [String] = []
    var packedF32: [UInt32] = []
    var colors: [Color] = []
    var packedDbl: [Double] = []
    var maxField: Int32?

    init() {}

    func encode(into w: inout ProtobufWriter) {
        if let i32 { w.writeInt32(field: 1, i32) }
        if let i64 { w.writeInt64(field: 2, i64) }
        if let u32 { w.writeUInt32(field: 3, u32) }
        if let u64 { w.writeUInt64(field: 4, u64) }
        if let s32 { w.writeSInt32(field: 5, s32) }
        if let s64 { w.writeSInt64(field: 6, s64) }
        if let f32 { w.writeFixed32(field: 7, f32) }
        if let f64 { w.writeFixed64(field: 8, f64) }
        if let sf32 { w.writeFixed32(field: 9, UInt32(bitPattern: sf32)) }
        if let sf64 { w.writeFixed64(field: 10, UInt64(bitPattern: sf64)) }
        if let flt { w.writeFixed32(field: 11, flt.bitPattern) }
        if let dbl { w.writeDouble(field: 12, dbl) }
        if let flag { w.writeBool(field: 13, flag) }
        if let text { w.writeString(field: 14, text) }
        if let blob { w.writeBytes(field: 15, blob) }
        if let color { w.writeInt32(field: 16, color.rawValue) }
        if let inner { w.writeMessage(field: 17, inner) }
        for v in repI32 { w.writeInt32(field: 18, v) }
        w.writePackedVarints(field: 19, packedS64.map { Zigzag.encode64($0) })
        for v in items { w.writeMessage(field: 20, v) }
        for v in names { w.writeString(field: 21, v) }
        w.writePackedFixed32(field: 22, packedF32)
        w.writePackedVarints(field: 23, colors.map { UInt64(bitPattern: Int64($0.rawValue)) })
        w.writePackedFixed64(field: 24, packedDbl.map(\.bitPattern))
        if let maxField { w.writeInt32(field: 536_870_911, maxField) }
    }

    init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let n = Self.name
        func toColor(_ raw: Int32, field: Int) throws(ProtobufError) -> Color {
            guard let c = Color(rawValue: raw) else { throw .invalidValue(message: n, field: field, value: Int64(raw)) }
            return c
        }
        while let f = try r.nextField() {
            switch f.number {
            case 1: i32 = try f.int32(in: n)
            case 2: i64 = try f.int64(in: n)
            case 3: u32 = try f.uint32(in: n)
            case 4: u64 = try f.uint64(in: n)
            case 5: s32 = try f.sint32(in: n)
            case 6: s64 = try f.sint64(in: n)
            case 7: f32 = try f.fixed32(in: n)
            case 8: f64 = try f.fixed64(in: n)
            case 9: sf32 = Int32(bitPattern: try f.fixed32(in: n))
            case 10: sf64 = Int64(bitPattern: try f.fixed64(in: n))
            case 11: flt = Float(bitPattern: try f.fixed32(in: n))
            case 12: dbl = try f.double(in: n)
            case 13: flag = try f.bool(in: n)
            case 14: text = try f.string(in: n)
            case 15: blob = Array(try f.bytes(in: n))
            case 16: color = try toColor(try f.int32(in: n), field: 16)
            case 17:
                // proto2 merges repeated occurrences of a message field; the tests never repeat it.
                var nested = try f.message(in: n)
                inner = try Inner(decoding: &nested)
            case 18: repI32 += try f.packedVarints(in: n).map { Int32(truncatingIfNeeded: $0) }
            case 19: packedS64 += try f.packedVarints(in: n).map { Zigzag.decode64($0) }
            case 20:
                var nested = try f.message(in: n)
                items.append(try Inner(decoding: &nested))
            case 21: names.append(try f.string(in: n))
            case 22: packedF32 += try f.packedFixed32(in: n)
            case 23:
                for v in try f.packedVarints(in: n) {
                    colors.append(try toColor(Int32(truncatingIfNeeded: v), field: 23))
                }
            case 24: packedDbl += try f.packedFixed64(in: n).map { Double(bitPattern: $0) }
            case 536_870_911: maxField = try f.int32(in: n)
            default: break
            }
        }
    }

    /// Equality by encoding, so that -0.0 and 0.0 differ and NaN payloads compare bit by bit.
    static func == (a: Self, b: Self) -> Bool { a.encoded() == b.encoded() }
}

/// A reader of zptest.WithGroup that knows only `a` (1) and `b` (7): the group (2) and field 4
/// are unknown and must be skipped.
struct WithGroupAB: ProtobufMessage, Equatable {
    var a: Int32?
    var b: String?
    var skippedGroup: ArraySlice<UInt8>?

    func encode(into w: inout ProtobufWriter) {
        if let a { w.writeInt32(field: 1, a) }
        if let b { w.writeString(field: 7, b) }
    }

    init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: a = try f.int32(in: "zptest.WithGroup")
            case 7: b = try f.string(in: "zptest.WithGroup")
            default:
                if case .group(let body) = f.value { skippedGroup = body }
            }
        }
    }
}

/// zptest.Batch: many AllTypes in one message.
struct Batch: ProtobufMessage, Equatable {
    var items: [AllTypes]

    init(items: [AllTypes]) { self.items = items }

    func encode(into w: inout ProtobufWriter) {
        for item in items { w.writeMessage(field: 1, item) }
    }

    init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        items = []
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                var nested = try f.message(in: "zptest.Batch")
                items.append(try AllTypes(decoding: &nested))
            default: break
            }
        }
    }
}

extension AllTypes {
    /// A random message: each optional field present with probability 1/2, values drawn from
    /// edge cases and the full range. `finiteOnly` keeps NaN out (protoc's text format does not
    /// keep NaN payloads).
    static func random(using g: inout SplitMix64, finiteOnly: Bool = true) -> AllTypes {
        func maybe<T>(_ make: () -> T) -> T? { Bool.random(using: &g) ? make() : nil }
        func int<T: FixedWidthInteger>(_: T.Type) -> T {
            switch Int.random(in: 0..<6, using: &g) {
            case 0: return 0
            case 1: return T.min
            case 2: return T.max
            case 3: return T(truncatingIfNeeded: Int.random(in: -2...2, using: &g))
            default:
                return T(truncatingIfNeeded: g.next() >> UInt64.random(in: 0..<64, using: &g))
                    &* (T.isSigned && Bool.random(using: &g) ? T(truncatingIfNeeded: -1) : 1)
            }
        }
        func double() -> Double {
            switch Int.random(in: 0..<6, using: &g) {
            case 0: return 0
            case 1: return -0.0
            case 2:
                return [Double.infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude][
                    Int.random(in: 0..<4, using: &g)
                ]
            default:
                let d = Double(bitPattern: g.next())
                return d.isNaN && finiteOnly ? 1.25 : d
            }
        }
        func float() -> Float {
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: g.next()))
            return f.isNaN && finiteOnly ? -3.5 : f
        }
        func string() -> String {
            let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "\n", "é", "✓", "😀", "\u{0}", "\u{7f}"]
            return (0..<Int.random(in: 0..<12, using: &g)).map { _ in alphabet.randomElement(using: &g)! }.joined()
        }
        func bytes() -> [UInt8] {
            (0..<Int.random(in: 0..<20, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        }
        func inner() -> Inner { Inner(id: int(Int32.self), label: maybe(string)) }
        func list<T>(_ make: () -> T) -> [T] { (0..<Int.random(in: 0..<4, using: &g)).map { _ in make() } }

        var m = AllTypes()
        m.i32 = maybe { int(Int32.self) }
        m.i64 = maybe { int(Int64.self) }
        m.u32 = maybe { int(UInt32.self) }
        m.u64 = maybe { int(UInt64.self) }
        m.s32 = maybe { int(Int32.self) }
        m.s64 = maybe { int(Int64.self) }
        m.f32 = maybe { int(UInt32.self) }
        m.f64 = maybe { int(UInt64.self) }
        m.sf32 = maybe { int(Int32.self) }
        m.sf64 = maybe { int(Int64.self) }
        m.flt = maybe(float)
        m.dbl = maybe(double)
        m.flag = maybe { Bool.random(using: &g) }
        m.text = maybe(string)
        m.blob = maybe(bytes)
        m.color = maybe { Color.allCases.randomElement(using: &g)! }
        m.inner = maybe(inner)
        m.repI32 = list { int(Int32.self) }
        m.packedS64 = list { int(Int64.self) }
        m.items = list(inner)
        m.names = list(string)
        m.packedF32 = list { int(UInt32.self) }
        m.colors = list { Color.allCases.randomElement(using: &g)! }
        m.packedDbl = list(double)
        m.maxField = maybe { int(Int32.self) }
        return m
    }
}
