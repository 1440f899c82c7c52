// Where things are in a TOML file's bytes: table headers, key lines and the extent of array
// values. TOMLKit tells what a file means but not where; the installer edits the user's config
// textually (one inserted line or array entry), so it needs byte offsets. Written by hand because
// no listed library keeps source positions. It assumes text that TOMLKit has accepted.

/// The layout of a valid TOML text: headers and key/value entries with their byte offsets.
public struct TOMLLayout: Sendable, Equatable {
    /// A `[table]` or `[[array of tables]]` header.
    public struct Header: Sendable, Equatable {
        /// 1-based line number.
        public var line: Int
        /// The header's key components (quotes removed).
        public var path: [String]
        /// Whether it is `[[...]]`.
        public var isArrayOfTables: Bool
    }

    /// A `key = value` entry.
    public struct Entry: Sendable, Equatable {
        /// The header path the entry belongs to (empty at the top level).
        public var table: [String]
        /// The key's components (`a."b".c` → ["a", "b", "c"]).
        public var key: [String]
        /// 1-based line of the key.
        public var line: Int
        /// Byte offset of the first byte of the line the key is on.
        public var lineStart: Int
        /// Byte offset just past the end of the entry's line (after its newline, or the end of text).
        public var lineEnd: Int
        /// Byte range of the value.
        public var value: Range<Int>
        /// For an array value: where a new last element goes, and what must come before it.
        public var arrayAppend: ArrayAppend?
    }

    /// Where to insert one more element into an array value.
    public struct ArrayAppend: Sendable, Equatable {
        /// Byte offset of the insertion.
        public var offset: Int
        /// What goes before the new element there: "" (empty array), " " (after a trailing comma)
        /// or ", " (after the last element).
        public var separator: String
    }

    /// Headers in file order.
    public var headers: [Header] = []
    /// Entries in file order.
    public var entries: [Entry] = []
    /// Byte offset of the first header's line, or nil when the file has none.
    public var firstHeaderLineStart: Int?

    /// The top-level entry with this single-component key.
    public func topLevel(_ key: String) -> Entry? {
        entries.first { $0.table.isEmpty && $0.key == [key] }
    }

    /// The line where the table at `path` is first defined: its header, or the first entry whose
    /// table path plus key starts with `path` (dotted keys, inline tables).
    public func line(ofTable path: [String]) -> Int? {
        if let h = headers.first(where: { $0.path.starts(with: path) }) { return h.line }
        return entries.first(where: { ($0.table + $0.key).starts(with: path) || path.starts(with: $0.table + $0.key) })?
            .line
    }

    /// Scans `text`.
    /// - Throws: `InstallerError` (naming the line) if the text is not TOML this scanner follows.
    public init(scanning text: String, path: String) throws(InstallerError) {
        var s = Scanner(bytes: Array(text.utf8), path: path)
        try s.scanDocument(into: &self)
    }

    private struct Scanner {
        let bytes: [UInt8]
        let path: String
        var i = 0
        var line = 1
        var table: [String] = []

        init(bytes: [UInt8], path: String) {
            self.bytes = bytes
            self.path = path
        }

        var atEnd: Bool { i >= bytes.count }
        var current: UInt8 { bytes[i] }

        func peek(_ offset: Int) -> UInt8? { i + offset < bytes.count ? bytes[i + offset] : nil }

        func error(_ reason: String) -> InstallerError { InstallerError(reason, file: path, line: line) }

        mutating func advance() {
            if bytes[i] == UInt8(ascii: "\n") { line += 1 }
            i += 1
        }

        /// Skips spaces and tabs.
        mutating func skipBlank() {
            while !atEnd, current == UInt8(ascii: " ") || current == UInt8(ascii: "\t") { advance() }
        }

        /// Skips blanks, newlines and comments.
        mutating func skipTrivia() {
            while !atEnd {
                switch current {
                case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"): advance()
                case UInt8(ascii: "#"): skipComment()
                default: return
                }
            }
        }

        mutating func skipComment() {
            while !atEnd, current != UInt8(ascii: "\n") { advance() }
        }

        func lineStart(of offset: Int) -> Int {
            var j = offset
            while j > 0, bytes[j - 1] != UInt8(ascii: "\n") { j -= 1 }
            return j
        }

        mutating func scanDocument(into layout: inout TOMLLayout) throws(InstallerError) {
            while true {
                skipTrivia()
                if atEnd { return }
                if current == UInt8(ascii: "[") {
                    let headerLine = line
                    let start = i
                    advance()
                    var isArray = false
                    if !atEnd, current == UInt8(ascii: "[") {
                        isArray = true
                        advance()
                    }
                    skipBlank()
                    let key = try scanKey()
                    skipBlank()
                    guard !atEnd, current == UInt8(ascii: "]") else { throw error("table header without ]") }
                    advance()
                    if isArray {
                        guard !atEnd, current == UInt8(ascii: "]") else {
                            throw error("array-of-tables header without ]]")
                        }
                        advance()
                    }
                    if layout.firstHeaderLineStart == nil { layout.firstHeaderLineStart = lineStart(of: start) }
                    layout.headers.append(Header(line: headerLine, path: key, isArrayOfTables: isArray))
                    table = key
                    try finishLine()
                } else {
                    let keyLine = line
                    let lineStart = lineStart(of: i)
                    let key = try scanKey()
                    skipBlank()
                    guard !atEnd, current == UInt8(ascii: "=") else {
                        throw error("expected = after key \(key.joined(separator: "."))")
                    }
                    advance()
                    skipBlank()
                    let valueStart = i
                    let append = try scanValue()
                    let valueEnd = i
                    try finishLine()
                    layout.entries.append(
                        Entry(
                            table: table,
                            key: key,
                            line: keyLine,
                            lineStart: lineStart,
                            lineEnd: i,
                            value: valueStart..<valueEnd,
                            arrayAppend: append
                        )
                    )
                }
            }
        }

        /// After a header or value: blanks, an optional comment, then a newline or the end.
        mutating func finishLine() throws(InstallerError) {
            skipBlank()
            if !atEnd, current == UInt8(ascii: "#") { skipComment() }
            if !atEnd, current == UInt8(ascii: "\r") { advance() }
            if atEnd { return }
            guard current == UInt8(ascii: "\n") else { throw error("unexpected text after a value") }
            advance()
        }

        /// A dotted key: bare, "basic" or 'literal' parts joined by dots.
        mutating func scanKey() throws(InstallerError) -> [String] {
            var parts: [String] = []
            while true {
                skipBlank()
                guard !atEnd else { throw error("key expected") }
                switch current {
                case UInt8(ascii: "\""): parts.append(try scanBasicString())
                case UInt8(ascii: "'"): parts.append(try scanLiteralString())
                default:
                    let start = i
                    while !atEnd, isBareKeyByte(current) { advance() }
                    guard i > start else { throw error("key expected") }
                    parts.append(String(decoding: bytes[start..<i], as: UTF8.self))
                }
                skipBlank()
                if !atEnd, current == UInt8(ascii: ".") {
                    advance()
                    continue
                }
                return parts
            }
        }

        func isBareKeyByte(_ b: UInt8) -> Bool {
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
                || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "_")
                || b == UInt8(ascii: "-")
        }

        /// A basic string (single-line or multi-line); returns its raw content for keys.
        mutating func scanBasicString() throws(InstallerError) -> String {
            let multi = peek(1) == UInt8(ascii: "\"") && peek(2) == UInt8(ascii: "\"")
            if multi {
                advance()
                advance()
                advance()
            } else {
                advance()
            }
            var out: [UInt8] = []
            while true {
                guard !atEnd else { throw error("unterminated string") }
                let b = current
                if b == UInt8(ascii: "\\") {
                    out.append(b)
                    advance()
                    guard !atEnd else { throw error("unterminated string") }
                    out.append(current)
                    advance()
                    continue
                }
                if b == UInt8(ascii: "\"") {
                    if !multi {
                        advance()
                        break
                    }
                    if peek(1) == UInt8(ascii: "\""), peek(2) == UInt8(ascii: "\"") {
                        advance()
                        advance()
                        advance()
                        // Up to two more quotes belong to the content ("""a"""" is a" + ").
                        while !atEnd, current == UInt8(ascii: "\"") { advance() }
                        break
                    }
                }
                if b == UInt8(ascii: "\n"), !multi { throw error("newline in a string") }
                out.append(b)
                advance()
            }
            return TOMLLayout.unescape(String(decoding: out, as: UTF8.self))
        }

        /// A literal string (single-line or multi-line).
        mutating func scanLiteralString() throws(InstallerError) -> String {
            let multi = peek(1) == UInt8(ascii: "'") && peek(2) == UInt8(ascii: "'")
            if multi {
                advance()
                advance()
                advance()
            } else {
                advance()
            }
            let start = i
            while true {
                guard !atEnd else { throw error("unterminated string") }
                if current == UInt8(ascii: "'") {
                    if !multi {
                        let s = String(decoding: bytes[start..<i], as: UTF8.self)
                        advance()
                        return s
                    }
                    if peek(1) == UInt8(ascii: "'"), peek(2) == UInt8(ascii: "'") {
                        let s = String(decoding: bytes[start..<i], as: UTF8.self)
                        advance()
                        advance()
                        advance()
                        while !atEnd, current == UInt8(ascii: "'") { advance() }
                        return s
                    }
                }
                if current == UInt8(ascii: "\n"), !multi { throw error("newline in a string") }
                advance()
            }
        }

        /// Any value; for arrays, returns where one more element would go.
        mutating func scanValue() throws(InstallerError) -> ArrayAppend? {
            guard !atEnd else { throw error("value expected") }
            switch current {
            case UInt8(ascii: "\""):
                _ = try scanBasicString()
                return nil
            case UInt8(ascii: "'"):
                _ = try scanLiteralString()
                return nil
            case UInt8(ascii: "["): return try scanArray()
            case UInt8(ascii: "{"):
                try scanInlineTable()
                return nil
            default:
                // Numbers, booleans, dates: up to a delimiter. Date-times may hold one space
                // ("1979-05-27 07:32:00"), which is followed by a digit.
                while !atEnd {
                    let b = current
                    if b == UInt8(ascii: ",") { break }
                    if b == UInt8(ascii: "]") || b == UInt8(ascii: "}") || b == UInt8(ascii: "#")
                        || b == UInt8(ascii: "\n")
                        || b == UInt8(ascii: "\r") || b == UInt8(ascii: "\t")
                    {
                        break
                    }
                    if b == UInt8(ascii: " ") {
                        if let n = peek(1), n >= UInt8(ascii: "0"), n <= UInt8(ascii: "9") {
                            advance()
                            continue
                        }
                        break
                    }
                    advance()
                }
                return nil
            }
        }

        mutating func scanArray() throws(InstallerError) -> ArrayAppend {
            let open = i
            advance()
            var lastEnd = open + 1
            var separator = ""
            while true {
                skipTrivia()
                guard !atEnd else { throw error("unterminated array") }
                if current == UInt8(ascii: "]") {
                    advance()
                    break
                }
                if current == UInt8(ascii: ",") {
                    advance()
                    lastEnd = i
                    separator = " "
                    continue
                }
                _ = try scanValue()
                lastEnd = i
                separator = ", "
            }
            return ArrayAppend(offset: lastEnd, separator: separator)
        }

        mutating func scanInlineTable() throws(InstallerError) {
            advance()
            while true {
                skipBlank()
                guard !atEnd else { throw error("unterminated inline table") }
                if current == UInt8(ascii: "}") {
                    advance()
                    return
                }
                if current == UInt8(ascii: ",") {
                    advance()
                    continue
                }
                _ = try scanKey()
                skipBlank()
                guard !atEnd, current == UInt8(ascii: "=") else { throw error("expected = in an inline table") }
                advance()
                skipBlank()
                _ = try scanValue()
            }
        }
    }

    /// Resolves the escapes of a basic string's raw content (for keys; values come from TOMLKit).
    static func unescape(_ raw: String) -> String {
        guard raw.contains("\\") else { return raw }
        var out = ""
        var it = raw.unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "\\", let e = it.next() else {
                out.unicodeScalars.append(c)
                continue
            }
            switch e {
            case "n": out += "\n"
            case "t": out += "\t"
            case "r": out += "\r"
            case "\"": out += "\""
            case "\\": out += "\\"
            case "b": out += "\u{8}"
            case "f": out += "\u{C}"
            case "u", "U":
                var hex = ""
                for _ in 0..<(e == "u" ? 4 : 8) { if let h = it.next() { hex.unicodeScalars.append(h) } }
                if let v = UInt32(hex, radix: 16), let s = Unicode.Scalar(v) { out.unicodeScalars.append(s) }
            default: out.unicodeScalars.append(e)
            }
        }
        return out
    }
}
