// Kubernetes resource quantities (`250m`, `64Mi`, `1e3`, `0.5`), parsed to compare them: the
// server canonicalises what it stores (`0.5` → `500m`, `1024` stays `1024` and equals `1Ki`), so
// the planners compare values, never strings.

/// A parsed resource quantity (resource.Quantity's syntax), compared by value.
public struct Quantity: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The value in the resource's base unit (cores for cpu, bytes for memory).
    public let value: Double
    /// The text it was parsed from.
    public let text: String

    private static let decimal: [String: Double] = [
        "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    ]
    private static let binary: [String: Double] = [
        "Ki": 1024, "Mi": 1_048_576, "Gi": 1_073_741_824, "Ti": 1_099_511_627_776, "Pi": 1_125_899_906_842_624,
        "Ei": 1_152_921_504_606_846_976,
    ]

    /// Parses a quantity; nil when `text` is not one (`resource.ParseQuantity`'s grammar: an
    /// optional sign, digits with an optional fraction, then a decimal SI suffix, a binary suffix
    /// or an exponent `e`/`E` with an optional sign).
    public init?(_ text: String) {
        let chars = Array(text)
        var i = 0
        if i < chars.count, chars[i] == "+" || chars[i] == "-" { i += 1 }
        let numberStart = i
        var sawDigit = false
        while i < chars.count, chars[i].isASCII, chars[i].isNumber {
            i += 1
            sawDigit = true
        }
        if i < chars.count, chars[i] == "." {
            i += 1
            while i < chars.count, chars[i].isASCII, chars[i].isNumber {
                i += 1
                sawDigit = true
            }
        }
        guard sawDigit, let number = Double(String(chars[0..<i])) else { return nil }
        _ = numberStart
        let suffix = String(chars[i...])
        var factor: Double
        if let d = Quantity.decimal[suffix] {
            factor = d
        } else if let b = Quantity.binary[suffix] {
            factor = b
        } else if let first = suffix.first, first == "e" || first == "E", let exponent = Int(suffix.dropFirst()),
            abs(exponent) <= 30
        {
            factor = 1
            for _ in 0..<abs(exponent) { factor *= 10 }
            if exponent < 0 { factor = 1 / factor }
        } else {
            return nil
        }
        self.value = number * factor
        self.text = text
    }

    /// Whether two quantities are the same value (within a relative 1e-9, for the decimal
    /// fractions a `Double` cannot hold exactly).
    public static func == (a: Quantity, b: Quantity) -> Bool {
        let scale = max(abs(a.value), abs(b.value), 1e-12)
        return abs(a.value - b.value) <= scale * 1e-9
    }

    /// Orders by value.
    public static func < (a: Quantity, b: Quantity) -> Bool { a.value < b.value && !(a == b) }

    /// Hashes nothing value-specific (equality is approximate), so equal values hash alike.
    public func hash(into hasher: inout Hasher) {}

    /// The text it was parsed from.
    public var description: String { text }

    /// Whether the quantity is zero (an unset request in the original's annotations).
    public var isZero: Bool { value == 0 }
}
