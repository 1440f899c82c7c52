// The shims report cumulative histograms (decision 0008); swift-prometheus's histogram only
// records observations. To export exactly the shim's buckets, count and sum, the manager records
// the difference between what the shim reports and what it exported so far as observations, one
// per new observation, each inside its bucket, together adding up to the difference of the sums.

/// A cumulative duration histogram as a shim reports it (Prometheus's shape).
public struct CumulativeHistogram: Sendable, Hashable {
    /// Upper bounds in seconds, ascending (`+Inf` implied).
    public var upperBounds: [Double]
    /// Per bound, the observations less than or equal to it.
    public var cumulativeCounts: [UInt64]
    /// All observations.
    public var count: UInt64
    /// The sum of all observations (seconds).
    public var sum: Double

    /// A histogram from its fields.
    public init(upperBounds: [Double], cumulativeCounts: [UInt64], count: UInt64, sum: Double) {
        self.upperBounds = upperBounds
        self.cumulativeCounts = cumulativeCounts
        self.count = count
        self.sum = sum
    }

    /// An empty histogram over `upperBounds`.
    public init(empty upperBounds: [Double]) {
        self.init(
            upperBounds: upperBounds,
            cumulativeCounts: Array(repeating: 0, count: upperBounds.count),
            count: 0,
            sum: 0
        )
    }

    /// The same histogram after `value` was observed.
    public func adding(_ value: Double) -> CumulativeHistogram {
        var copy = self
        for (i, bound) in upperBounds.enumerated() where value <= bound { copy.cumulativeCounts[i] += 1 }
        copy.count += 1
        copy.sum += value
        return copy
    }

    /// Observations per bucket (not cumulative), the `+Inf` bucket last.
    var bucketCounts: [UInt64]? {
        guard cumulativeCounts.count == upperBounds.count else { return nil }
        var result: [UInt64] = []
        var previous: UInt64 = 0
        for c in cumulativeCounts {
            guard c >= previous else { return nil }
            result.append(c - previous)
            previous = c
        }
        guard count >= previous else { return nil }
        result.append(count - previous)
        return result
    }
}

/// What to do to make an exported histogram equal a reported one (pure).
public enum HistogramReplay: Sendable, Equatable {
    /// Record these observations (none when nothing changed).
    case record([Double])
    /// The reported histogram is not a continuation of the exported one (fewer observations, other
    /// bounds): start the series again and record these observations from empty.
    case restart([Double])

    /// The replay that turns `exported` into `reported`.
    public static func plan(exported: CumulativeHistogram, reported: CumulativeHistogram) -> HistogramReplay {
        if exported.upperBounds == reported.upperBounds, let values = observations(from: exported, to: reported) {
            return .record(values)
        }
        return .restart(observations(from: CumulativeHistogram(empty: reported.upperBounds), to: reported) ?? [])
    }

    /// Observations that take `from` to `to`, nil if `to` does not continue `from`.
    static func observations(from: CumulativeHistogram, to: CumulativeHistogram) -> [Double]? {
        guard let old = from.bucketCounts, let new = to.bucketCounts, old.count == new.count else { return nil }
        var deltas: [UInt64] = []
        for (a, b) in zip(old, new) {
            guard b >= a else { return nil }
            deltas.append(b - a)
        }
        let n = deltas.reduce(0, +)
        if n == 0 { return [] }
        // Each value starts at the smallest value of its bucket, then the rest of the sum is spread
        // over them without leaving a bucket; a `+Inf` observation takes whatever remains.
        var values: [Double] = []
        var highs: [Double] = []
        for (i, d) in deltas.enumerated() where d > 0 {
            let low = i == 0 ? 0 : to.upperBounds[i - 1].nextUp
            let high = i < to.upperBounds.count ? to.upperBounds[i] : Double.infinity
            for _ in 0..<d {
                values.append(low)
                highs.append(high)
            }
        }
        var remaining = (to.sum - from.sum) - values.reduce(0, +)
        if remaining > 0 {
            for i in values.indices where remaining > 0 {
                let room = highs[i] - values[i]
                let add = min(room, remaining)
                values[i] += add
                remaining -= add
            }
        }
        return values
    }
}
