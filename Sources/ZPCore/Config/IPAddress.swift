// IP addresses for node settings (probe source addresses). Standard library only, so parsed and
// printed here rather than with inet_pton/inet_ntop.

/// An IPv4 or IPv6 address, without zone or prefix.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`) stay `.v6`; `unmappedV4` and `v4Mapped` convert,
/// and `matchingForms` gives both so a filter catches a client whichever socket family it arrives on.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 address; `a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`.
    case v4(UInt32)
    /// An IPv6 address as two 64-bit halves in network order (`high` holds bytes 0-7).
    case v6(high: UInt64, low: UInt64)

    /// Parses dotted-decimal IPv4 (`10.0.0.5`, no leading zeros) or textual IPv6 (`fd00::5`,
    /// `::ffff:10.0.0.5`). Zones (`%eth0`) and prefixes (`/24`) are refused.
    /// - Returns: nil when `text` is neither.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        if bytes.contains(UInt8(ascii: ":")) {
            guard let v = Self.parseV6(bytes[...]) else { return nil }
            self = v
        } else {
            guard let v = Self.parseV4(bytes[...]) else { return nil }
            self = .v4(v)
        }
    }

    /// The address bytes in network order: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let v): return (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) }
        case .v6(let high, let low):
            return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        }
    }

    /// The address from 4 (IPv4) or 16 (IPv6) network-order bytes; nil for other lengths.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            self = .v6(
                high: bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) },
                low: bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
            )
        default: return nil
        }
    }

    /// For IPv4, the IPv4-mapped IPv6 form (`::ffff:a.b.c.d`); IPv6 addresses are returned unchanged.
    public var v4Mapped: IPAddress {
        switch self {
        case .v4(let v): return .v6(high: 0, low: 0xffff_0000_0000 | UInt64(v))
        case .v6: return self
        }
    }

    /// For an IPv4-mapped IPv6 address, the IPv4 address; for IPv4, itself; nil otherwise.
    public var unmappedV4: IPAddress? {
        switch self {
        case .v4: return self
        case .v6(let high, let low):
            guard high == 0, low >> 32 == 0xffff else { return nil }
            return .v4(UInt32(truncatingIfNeeded: low))
        }
    }

    /// The address and, for IPv4 and IPv4-mapped addresses, its other form.
    public var matchingForms: Set<IPAddress> {
        if let v4 = unmappedV4 { return [v4, v4.v4Mapped] }
        return [self]
    }

    /// True for 127.0.0.0/8, `::1` and IPv4-mapped 127.0.0.0/8.
    public var isLoopback: Bool {
        if case .v6(0, 1) = self { return true }
        if case .v4(let v)? = unmappedV4 { return v >> 24 == 127 }
        return false
    }

    /// Dotted decimal for IPv4; RFC 5952 text for IPv6 (lowercase, longest run of two or more zero
    /// groups as `::`, IPv4-mapped addresses as `::ffff:a.b.c.d`).
    public var description: String {
        switch self {
        case .v4(let v): return Self.formatV4(v)
        case .v6(let high, let low):
            if high == 0, low >> 32 == 0xffff { return "::ffff:" + Self.formatV4(UInt32(truncatingIfNeeded: low)) }
            let groups =
                (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * $0)) }
                + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * $0)) }
            var bestStart = -1
            var bestLength = 1
            var i = 0
            while i < 8 {
                guard groups[i] == 0 else {
                    i += 1
                    continue
                }
                var j = i
                while j < 8, groups[j] == 0 { j += 1 }
                if j - i > bestLength {
                    bestStart = i
                    bestLength = j - i
                }
                i = j
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            if bestStart < 0 { return hex(0..<8) }
            return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
        }
    }

    private static func formatV4(_ v: UInt32) -> String {
        "\(v >> 24).\(v >> 16 & 0xff).\(v >> 8 & 0xff).\(v & 0xff)"
    }

    private static func parseV4(_ s: ArraySlice<UInt8>) -> UInt32? {
        let parts = s.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            guard part.count == 1 || part.first != UInt8(ascii: "0") else { return nil }
            let n = part.reduce(0) { $0 * 10 + UInt32($1 - 48) }
            guard n <= 255 else { return nil }
            out = out << 8 | n
        }
        return out
    }

    private static func parseV6(_ s: ArraySlice<UInt8>) -> IPAddress? {
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawGap = false
        var rest = s
        // A leading "::" or a single leading ":" (invalid).
        if rest.starts(with: [58, 58]) {
            sawGap = true
            rest = rest.dropFirst(2)
            if rest.isEmpty { return .v6(high: 0, low: 0) }
        } else if rest.first == 58 {
            return nil
        }
        while true {
            // An embedded IPv4 address ends the text.
            let nextColon = rest.firstIndex(of: 58) ?? rest.endIndex
            let piece = rest[rest.startIndex..<nextColon]
            if nextColon == rest.endIndex, piece.contains(UInt8(ascii: ".")) {
                guard let v4 = parseV4(piece) else { return nil }
                let pair = [UInt16(v4 >> 16), UInt16(v4 & 0xffff)]
                if sawGap { tail += pair } else { head += pair }
                break
            }
            guard (1...4).contains(piece.count) else { return nil }
            var group: UInt16 = 0
            for c in piece {
                let d: UInt16
                switch c {
                case 48...57: d = UInt16(c - 48)
                case 97...102: d = UInt16(c - 87)
                case 65...70: d = UInt16(c - 55)
                default: return nil
                }
                group = group << 4 | d
            }
            if sawGap { tail.append(group) } else { head.append(group) }
            if nextColon == rest.endIndex { break }
            rest = rest[(nextColon + 1)...]
            if rest.first == 58 {
                guard !sawGap else { return nil }  // a second "::"
                sawGap = true
                rest = rest.dropFirst()
                if rest.isEmpty { break }
            } else if rest.isEmpty {
                return nil  // trailing single ":"
            }
        }
        let count = head.count + tail.count
        if sawGap { guard count <= 7 else { return nil } } else { guard count == 8 else { return nil } }
        let groups = head + Array(repeating: 0, count: 8 - count) + tail
        let high = groups[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = groups[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        return .v6(high: high, low: low)
    }
}
