// A parsed TOML file as a Sendable value tree. TOMLKit (toml++) parses; its tables are reference
// types bound to C++ storage, so they are copied into `TOMLNode` at once and never leave this file.
import TOMLKit

/// A TOML value: the subset of TOML types that containerd configs use, plus a catch-all.
public indirect enum TOMLNode: Sendable, Equatable {
    /// A table (header or inline).
    case table([String: TOMLNode])
    /// An array.
    case array([TOMLNode])
    /// A string.
    case string(String)
    /// An integer.
    case int(Int)
    /// A float.
    case double(Double)
    /// A boolean.
    case bool(Bool)
    /// A date, time or date-time, kept as TOML text.
    case other(String)

    /// The value at a dotted path of table keys (`["plugins", "io.containerd.grpc.v1.cri"]`).
    public subscript(path: [String]) -> TOMLNode? {
        var node: TOMLNode? = self
        for key in path {
            guard case .table(let t)? = node else { return nil }
            node = t[key]
        }
        return node
    }

    /// The value at one key of a table.
    public subscript(key: String) -> TOMLNode? { self[[key]] }

    /// The table's entries, or nil.
    public var table: [String: TOMLNode]? {
        if case .table(let t) = self { return t }
        return nil
    }

    /// The string, or nil.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The integer, or nil.
    public var int: Int? {
        if case .int(let i) = self { return i }
        return nil
    }

    /// The array's strings (nil if this is not an array of strings).
    public var strings: [String]? {
        guard case .array(let items) = self else { return nil }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else { return nil }
            out.append(s)
        }
        return out
    }

    /// The value as a TOML literal for a `key = value` line (tables inline).
    public var tomlLiteral: String {
        switch self {
        case .string(let s): return TOMLNode.quoted(s)
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(d) : (d.isNaN ? "nan" : (d > 0 ? "inf" : "-inf"))
        case .bool(let b): return b ? "true" : "false"
        case .other(let text): return text
        case .array(let items): return "[" + items.map(\.tomlLiteral).joined(separator: ", ") + "]"
        case .table(let t):
            let entries = t.keys.sorted().map { "\(TOMLNode.key($0)) = \(t[$0]!.tomlLiteral)" }
            return "{" + entries.joined(separator: ", ") + "}"
        }
    }

    /// A TOML basic string with the escapes TOML requires.
    public static func quoted(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// A key as TOML writes it: bare when it can be, quoted otherwise.
    public static func key(_ k: String) -> String {
        let bare =
            !k.isEmpty
            && k.unicodeScalars.allSatisfy {
                ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || $0 == "_"
                    || $0 == "-"
            }
        return bare ? k : quoted(k)
    }
}

/// A TOML file: its bytes, its path (for messages) and its parsed root table.
public struct TOMLDocument: Sendable, Equatable {
    /// The path the text came from, as the installer sees it.
    public var path: String
    /// The exact text.
    public var text: String
    /// The root table.
    public var root: TOMLNode

    /// Parses `text` with TOMLKit.
    /// - Throws: `InstallerError` naming `path`, the line and TOML's reason.
    public init(path: String, text: String) throws(InstallerError) {
        self.path = path
        self.text = text
        do {
            let table = try TOMLTable(string: text)
            root = TOMLDocument.node(table)
        } catch let error as TOMLParseError {
            throw InstallerError(
                "not valid TOML: \(error.description) (column \(error.source.begin.column))",
                file: path,
                line: error.source.begin.line
            )
        } catch {
            throw InstallerError("cannot be parsed: \(error)", file: path)
        }
    }

    private static func node(_ value: any TOMLValueConvertible) -> TOMLNode {
        switch value.type {
        case .table:
            guard let t = value.table else { return .other(value.debugDescription) }
            var out: [String: TOMLNode] = [:]
            for key in t.keys {
                if let v = t[key] { out[key] = node(v) }
            }
            return .table(out)
        case .array:
            guard let a = value.array else { return .other(value.debugDescription) }
            return .array(a.map { node($0) })
        case .string: return value.string.map(TOMLNode.string) ?? .other(value.debugDescription)
        case .int: return value.int.map(TOMLNode.int) ?? .other(value.debugDescription)
        case .double: return value.double.map(TOMLNode.double) ?? .other(value.debugDescription)
        case .bool: return value.bool.map(TOMLNode.bool) ?? .other(value.debugDescription)
        case .date, .time, .dateTime: return .other(value.debugDescription)
        }
    }

    private static func node(_ table: TOMLTable) -> TOMLNode {
        var out: [String: TOMLNode] = [:]
        for key in table.keys {
            if let v = table[key] { out[key] = node(v) }
        }
        return .table(out)
    }
}
