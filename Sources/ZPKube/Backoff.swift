/// Exponential backoff with jitter: `initial`, then times `factor` per failure up to `maximum`, each
/// delay stretched by a random share of up to `jitter` (so many clients that failed together do not
/// retry together). A value type: the caller owns the failure count.
public struct Backoff: Sendable, Hashable {
    /// The first delay.
    public var initial: Duration
    /// The largest delay (before jitter).
    public var maximum: Duration
    /// The growth per failure.
    public var factor: Double
    /// The largest random stretch, as a share of the delay (0.5 = up to +50 %).
    public var jitter: Double
    /// Failures since the last ``reset()``.
    public private(set) var failures = 0

    /// A backoff (defaults like client-go's reflector: 800 ms doubling up to 30 s, jitter 1.0 there;
    /// 0.5 here).
    public init(
        initial: Duration = .milliseconds(800),
        maximum: Duration = .seconds(30),
        factor: Double = 2,
        jitter: Double = 0.5
    ) {
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
    }

    /// The delay before the next attempt after one more failure.
    /// - Parameter random: a number in `0..<1` (the jitter's share); tests pass a fixed one.
    public mutating func nextDelay(random: Double = Double.random(in: 0..<1)) -> Duration {
        let base = initial * Double.pow(factor, failures)
        failures += 1
        let capped = min(base, maximum)
        return capped + capped * (jitter * random)
    }

    /// Forgets the failures (after a success).
    public mutating func reset() {
        failures = 0
    }
}

extension Double {
    fileprivate static func pow(_ base: Double, _ exponent: Int) -> Double {
        var result = 1.0
        for _ in 0..<min(exponent, 64) { result *= base }
        return result
    }
}
