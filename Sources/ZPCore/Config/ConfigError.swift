// Typed errors for annotation and node-configuration parsing. One struct for every setting, so the
// shim maps all configuration failures to one ttrpc code (InvalidArgument) in one place.

/// A configuration value that cannot be parsed: names the setting, the bad value and the reason.
///
/// `description` reads like `zeropod.ctrox.dev/scaledown-duration: invalid duration "5x": unknown unit "x"`,
/// prefixed with `file:line: ` for settings read from a node configuration file.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Why a value was refused. The associated strings are the detail after the colon.
    public enum Reason: Equatable, Sendable {
        /// Not a Go duration (`10s`, `1m30s`, `500ms`, `0`), or negative, or out of range.
        case invalidDuration(String)
        /// Not one of Go's `strconv.ParseBool` spellings.
        case invalidBoolean
        /// Not a decimal integer, or outside the allowed range.
        case invalidInteger(String)
        /// A `ports-map` value that is not `name=port[,port...][;name=port...]`.
        case invalidPortsMap(String)
        /// A comma list of ports (`zeropod-swift/speaks-first-ports`) with a malformed or repeated element.
        case invalidPortList(String)
        /// A comma-separated list of container names with an empty or malformed element.
        case invalidNameList(String)
        /// A single container name that is empty or malformed.
        case invalidName(String)
        /// A group name (e.g. `zeropod-swift/wake-group`) that is not a DNS label.
        case invalidGroupName(String)
        /// An IPv4 or IPv6 address (or a list of them) that does not parse.
        case invalidAddress(String)
        /// A file system path or command name that is not acceptable.
        case invalidPath(String)
        /// A value that is not one of the allowed words (listed).
        case invalidChoice([String])
        /// A node configuration key that this version does not know.
        case unknownSetting
        /// A node configuration key given twice; the first was on `firstLine`.
        case duplicateSetting(firstLine: Int)
        /// A node configuration line that is not `key = value`, a comment or blank.
        case malformedLine
        /// A list with more elements than the mechanism behind it holds (the detail says which).
        case tooMany(String)
        /// A setting this version parses but does not carry out yet (the detail says what to do).
        case notSupportedYet(String)
    }

    /// The annotation key (`zeropod.ctrox.dev/...`) or node setting name; empty for a malformed line.
    public var key: String
    /// The value exactly as given (annotations are not trimmed; node file values are).
    public var value: String
    /// Why the value was refused.
    public var reason: Reason
    /// `file:line` for node configuration files; nil for annotations.
    public var location: String?

    /// Creates an error for `key` holding `value`.
    public init(key: String, value: String, reason: Reason, location: String? = nil) {
        self.key = key
        self.value = value
        self.reason = reason
        self.location = location
    }

    /// The reason as text, including the quoted bad value.
    public var reasonDescription: String {
        let v = quoted(value)
        switch reason {
        case .invalidDuration(let detail): return "invalid duration \(v): \(detail)"
        case .invalidBoolean:
            return "invalid boolean \(v): expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"
        case .invalidInteger(let detail): return "invalid integer \(v): \(detail)"
        case .invalidPortsMap(let detail): return "invalid ports map \(v): \(detail)"
        case .invalidPortList(let detail): return "invalid port list \(v): \(detail)"
        case .invalidNameList(let detail): return "invalid container name list \(v): \(detail)"
        case .invalidName(let detail): return "invalid container name \(v): \(detail)"
        case .invalidGroupName(let detail): return "invalid group name \(v): \(detail)"
        case .invalidAddress(let detail): return "invalid address \(v): \(detail)"
        case .invalidPath(let detail): return "invalid path \(v): \(detail)"
        case .invalidChoice(let allowed):
            return "invalid value \(v): expected one of \(allowed.joined(separator: ", "))"
        case .unknownSetting: return "unknown setting (value \(v))"
        case .duplicateSetting(let first): return "set again to \(v) (first set on line \(first))"
        case .malformedLine: return "malformed line \(v): expected key = value, a # comment or a blank line"
        case .tooMany(let detail): return "too many values in \(v): \(detail)"
        case .notSupportedYet(let detail): return "not supported yet (value \(v)): \(detail)"
        }
    }

    /// The full message: `[location: ][key: ]reason`. A key that is not plain printable ASCII
    /// (an unknown key from a file, with control or combining characters) is quoted like a value,
    /// so the message's separators stay intact and nothing unprintable reaches a log.
    public var description: String {
        var out = ""
        if let location { out += location + ": " }
        if !key.isEmpty {
            let plain = key.utf8.allSatisfy {
                $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\")
            }
            out += (plain ? key : quoted(key)) + ": "
        }
        return out + reasonDescription
    }
}

/// Quotes a value for an error message like Go's `%q` for printable text: `"` and `\` escaped,
/// control characters as `\n`, `\t` or `\u{..}`.
func quoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}
