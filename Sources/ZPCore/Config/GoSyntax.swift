// Go's value syntaxes that zeropod annotations use: `time.ParseDuration` and `strconv.ParseBool`.
// Written by hand (ZPCore is standard library only) to accept exactly what the original accepts,
// so existing workloads keep working; zeropod-specific range rules live in ContainerConfig.

/// Go's duration syntax (`time.ParseDuration`): an optional sign, then one or more decimal numbers,
/// each with an optional fraction and a unit: `ns`, `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h`.
/// Examples: `300ms`, `1.5h`, `2h45m`, `-1m`. A bare `0` (with or without sign) means zero; any other
/// number needs a unit.
public enum GoDuration {
    /// Why a string is not a Go duration; `description` is the detail used in `ConfigError`.
    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// Nothing but an optional sign.
        case empty
        /// A unit or other text where a number was expected, e.g. `"m"` or `"1m x"`.
        case expectedNumber
        /// A number without a unit, e.g. `"5"`.
        case missingUnit
        /// A unit that Go does not know, e.g. `"x"` in `"5x"`.
        case unknownUnit(String)
        /// The value does not fit in 64-bit nanoseconds (about 292 years).
        case outOfRange

        /// The detail text, e.g. `unknown unit "x"`.
        public var description: String {
            switch self {
            case .empty: return "empty"
            case .expectedNumber: return "expected a number"
            case .missingUnit: return "missing unit (one of ns, us, ms, s, m, h)"
            case .unknownUnit(let u): return "unknown unit \(quoted(u))"
            case .outOfRange: return "out of range"
            }
        }
    }

    private static let units: [(name: [UInt8], nanoseconds: UInt64)] = [
        (Array("ns".utf8), 1),
        (Array("us".utf8), 1_000),
        (Array("µs".utf8), 1_000),  // U+00B5 MICRO SIGN
        (Array("μs".utf8), 1_000),  // U+03BC GREEK SMALL LETTER MU
        (Array("ms".utf8), 1_000_000),
        (Array("s".utf8), 1_000_000_000),
        (Array("m".utf8), 60 * 1_000_000_000),
        (Array("h".utf8), 3600 * 1_000_000_000),
    ]

    /// Parses `text` into signed nanoseconds, with the same results as Go's `time.ParseDuration`.
    /// - Throws: `GoDuration.ParseError` naming what is wrong.
    public static func nanoseconds(_ text: String) throws(ParseError) -> Int64 {
        let s = Array(text.utf8)
        var i = 0
        var negative = false
        if let c = s.first, c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
            negative = c == UInt8(ascii: "-")
            i = 1
        }
        if s.count - i == 1 && s[i] == UInt8(ascii: "0") { return 0 }
        if i == s.count { throw .empty }
        let limit: UInt64 = 1 << 63
        var total: UInt64 = 0
        func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        while i < s.count {
            guard s[i] == UInt8(ascii: ".") || isDigit(s[i]) else { throw .expectedNumber }
            // Integer part.
            var whole: UInt64 = 0
            let wholeStart = i
            while i < s.count, isDigit(s[i]) {
                guard whole <= (limit - 1) / 10 else { throw .outOfRange }
                whole = whole * 10 + UInt64(s[i] - UInt8(ascii: "0"))
                guard whole <= limit else { throw .outOfRange }
                i += 1
            }
            let hasWhole = i != wholeStart
            // Fraction: digits beyond 63 bits of precision are ignored, as Go does.
            var fraction: UInt64 = 0
            var scale = 1.0
            var hasFraction = false
            if i < s.count, s[i] == UInt8(ascii: ".") {
                i += 1
                let fractionStart = i
                var overflow = false
                while i < s.count, isDigit(s[i]) {
                    defer { i += 1 }
                    if overflow { continue }
                    if fraction > (limit - 1) / 10 {
                        overflow = true
                        continue
                    }
                    let next = fraction * 10 + UInt64(s[i] - UInt8(ascii: "0"))
                    if next > limit {
                        overflow = true
                        continue
                    }
                    fraction = next
                    scale *= 10
                }
                hasFraction = i != fractionStart
            }
            guard hasWhole || hasFraction else { throw .expectedNumber }
            // Unit: everything up to the next number.
            let unitStart = i
            while i < s.count, s[i] != UInt8(ascii: "."), !isDigit(s[i]) { i += 1 }
            guard i > unitStart else { throw .missingUnit }
            let unitBytes = Array(s[unitStart..<i])
            guard let unit = units.first(where: { $0.name == unitBytes })?.nanoseconds else {
                throw .unknownUnit(String(decoding: unitBytes, as: UTF8.self))
            }
            guard whole <= limit / unit else { throw .outOfRange }
            var value = whole * unit
            if fraction > 0 {
                value += UInt64(Double(fraction) * (Double(unit) / scale))
                guard value <= limit else { throw .outOfRange }
            }
            total += value
            guard total <= limit else { throw .outOfRange }
        }
        if negative { return total == limit ? Int64.min : -Int64(total) }
        guard total <= limit - 1 else { throw .outOfRange }
        return Int64(total)
    }

    /// Parses `text` into a `Duration`, like Go's `time.ParseDuration`.
    /// - Throws: `GoDuration.ParseError` naming what is wrong.
    public static func parse(_ text: String) throws(ParseError) -> Duration {
        .nanoseconds(try nanoseconds(text))
    }

    /// Formats a duration the way Go's `Duration.String` does for whole units: `1h30m0s`, `5s`,
    /// `500ms`, `0s`. Sub-second values use the largest of `ms`, `µs`, `ns` that keeps an integer.
    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let ns = seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000  // wraps only past ~292 years
        if ns == 0 { return "0s" }
        let sign = ns < 0 ? "-" : ""
        let magnitude = ns.magnitude
        if magnitude < 1_000_000_000 {
            if magnitude % 1_000_000 == 0 { return "\(sign)\(magnitude / 1_000_000)ms" }
            if magnitude % 1_000 == 0 { return "\(sign)\(magnitude / 1_000)µs" }
            return "\(sign)\(magnitude)ns"
        }
        let hours = magnitude / 3_600_000_000_000
        let minutes = magnitude / 60_000_000_000 % 60
        let rest = magnitude % 60_000_000_000
        var secondsText = "\(rest / 1_000_000_000)"
        if rest % 1_000_000_000 != 0 {
            var frac = String(rest % 1_000_000_000)
            frac = String(repeating: "0", count: 9 - frac.count) + frac
            while frac.hasSuffix("0") { frac.removeLast() }
            secondsText += "." + frac
        }
        var out = sign
        if hours > 0 { out += "\(hours)h\(minutes)m" } else if minutes > 0 { out += "\(minutes)m" }
        return out + secondsText + "s"
    }
}

/// Go's `strconv.ParseBool`: exactly `1`, `t`, `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`,
/// `FALSE`, `false`, `False`. No trimming, no other spellings.
public enum GoBool {
    /// The boolean `text` spells, or nil when it is none of the twelve spellings.
    public static func parse(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: return nil
        }
    }
}
