// Field tables for hand-written messages: one line per field, the field number written once, used
// by both the encoder and the decoder. Still hand-written (decision 0001): no schema compiler, no
// generated file; the table is the message's `.proto` line by line, in Swift.

/// One field of a ``ProtobufFieldTable``: its number, how to write it from the message and how to
/// read it into the message.
///
/// Make rules with the static functions (`.string(1, \.id)`, `.message(3, \.exitedAt)`, ...).
/// Scalars follow proto3: a default value (0, false, "") is not written. Singular messages are
/// written when present, repeated fields once per element.
public struct ProtobufFieldRule<Message>: Sendable {
    /// The field number.
    public let number: Int
    let write: @Sendable (Message, inout ProtobufWriter) -> Void
    let read: @Sendable (inout Message, ProtobufField, String) throws(ProtobufError) -> Void

    /// A rule of its own for a field the typed rules do not cover (an enum with wire numbers, a
    /// value derived from another field, a duration in nanoseconds, a map).
    ///
    /// - Parameters:
    ///   - number: The field number, passed to both closures.
    ///   - write: Writes the field (or nothing) for `message`.
    ///   - read: Reads one occurrence of the field into the message; the string names the message
    ///     for errors.
    public static func custom(
        _ number: Int,
        write: @escaping @Sendable (_ message: Message, _ number: Int, _ writer: inout ProtobufWriter) -> Void,
        read:
            @escaping @Sendable (_ message: inout Message, _ field: ProtobufField, _ messageName: String)
            throws(ProtobufError) -> Void
    ) -> Self {
        ProtobufFieldRule(number: number, write: { m, w in write(m, number, &w) }, read: read)
    }
}

/// A key path to a message's stored property, as field rules take it (key path literals to stored
/// properties are Sendable).
public typealias ProtobufFieldPath<Root, Value> = any WritableKeyPath<Root, Value> & Sendable

extension ProtobufFieldRule {
    /// `string`, omitted when empty.
    public static func string(_ number: Int, _ path: ProtobufFieldPath<Message, String>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeStringIfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.string(in: name) }
        )
    }

    /// `repeated string`, one field per element.
    public static func strings(_ number: Int, _ path: ProtobufFieldPath<Message, [String]>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in for s in m[keyPath: path] { w.writeString(field: number, s) } },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path].append(try f.string(in: name)) }
        )
    }

    /// `bool`, omitted when false.
    public static func bool(_ number: Int, _ path: ProtobufFieldPath<Message, Bool>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeBoolIfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.bool(in: name) }
        )
    }

    /// `uint32`, omitted when 0.
    public static func uint32(_ number: Int, _ path: ProtobufFieldPath<Message, UInt32>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeUInt32IfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.uint32(in: name) }
        )
    }

    /// `uint64`, omitted when 0.
    public static func uint64(_ number: Int, _ path: ProtobufFieldPath<Message, UInt64>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeUInt64IfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.uint64(in: name) }
        )
    }

    /// `int32`, omitted when 0.
    public static func int32(_ number: Int, _ path: ProtobufFieldPath<Message, Int32>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeInt32IfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.int32(in: name) }
        )
    }

    /// `int64`, omitted when 0.
    public static func int64(_ number: Int, _ path: ProtobufFieldPath<Message, Int64>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeInt64IfNotDefault(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path] = try f.int64(in: name) }
        )
    }

    /// A singular message field, written when present (an empty message still writes its tag).
    public static func message<M: ProtobufMessage>(_ number: Int, _ path: ProtobufFieldPath<Message, M?>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in if let v = m[keyPath: path] { w.writeMessage(field: number, v) } },
            read: { m, f, name throws(ProtobufError) in
                var r = try f.message(in: name)
                m[keyPath: path] = try M(decoding: &r)
            }
        )
    }

    /// A singular message field that is always written (a non-optional property).
    public static func message<M: ProtobufMessage>(_ number: Int, _ path: ProtobufFieldPath<Message, M>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in w.writeMessage(field: number, m[keyPath: path]) },
            read: { m, f, name throws(ProtobufError) in
                var r = try f.message(in: name)
                m[keyPath: path] = try M(decoding: &r)
            }
        )
    }

    /// A repeated message field, one field per element.
    public static func messages<M: ProtobufMessage>(_ number: Int, _ path: ProtobufFieldPath<Message, [M]>) -> Self {
        ProtobufFieldRule(
            number: number,
            write: { m, w in for v in m[keyPath: path] { w.writeMessage(field: number, v) } },
            read: { m, f, name throws(ProtobufError) in
                var r = try f.message(in: name)
                m[keyPath: path].append(try M(decoding: &r))
            }
        )
    }
}

/// A message's fields as a table: encodes them in table order (write the table in field-number
/// order to match protoc), decodes each field by its number, and skips unknown fields.
public struct ProtobufFieldTable<Message>: Sendable {
    /// The message's full name, used in decoding errors.
    public let messageName: String
    private let rules: [ProtobufFieldRule<Message>]
    private let index: [Int: Int]

    /// A table from its rules.
    ///
    /// - Parameters:
    ///   - messageName: The message's full name for errors (`containerd.task.v2.KillRequest`).
    ///   - rules: One rule per field; a field number used twice is a programming error (trap).
    public init(_ messageName: String, _ rules: [ProtobufFieldRule<Message>]) {
        self.messageName = messageName
        self.rules = rules
        var index: [Int: Int] = [:]
        for (i, rule) in rules.enumerated() {
            precondition(
                index.updateValue(i, forKey: rule.number) == nil,
                "\(messageName): field \(rule.number) listed twice"
            )
        }
        self.index = index
    }

    /// Writes every field of `message`.
    public func encode(_ message: Message, into writer: inout ProtobufWriter) {
        for rule in rules { rule.write(message, &writer) }
    }

    /// Reads fields until the end of `reader` into `message` (which holds the defaults).
    /// - Throws: `ProtobufError` for malformed input or a field with the wrong wire type.
    public func decode(into message: inout Message, from reader: inout ProtobufReader) throws(ProtobufError) {
        while let field = try reader.nextField() {
            guard let i = index[field.number] else { continue }
            try rules[i].read(&message, field, messageName)
        }
    }
}

/// A message whose codec is its ``ProtobufFieldTable``: `encode(into:)` and `init(decoding:)`
/// come from the table.
public protocol ProtobufTableMessage: ProtobufMessage {
    /// The message with every field at its default.
    init()
    /// The fields, one rule per line.
    static var fields: ProtobufFieldTable<Self> { get }
}

extension ProtobufTableMessage {
    /// Writes the fields in table order, proto3 defaults omitted.
    public func encode(into writer: inout ProtobufWriter) {
        Self.fields.encode(self, into: &writer)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding reader: inout ProtobufReader) throws(ProtobufError) {
        self.init()
        try Self.fields.decode(into: &self, from: &reader)
    }
}
