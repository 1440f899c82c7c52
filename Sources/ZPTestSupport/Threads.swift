// Blocking work off Swift's cooperative pool: the pool is as wide as the machine (two threads
// here), and a blocking call on it starves the NIO-based code the tests drive.
import Foundation
import Synchronization

/// Runs `body(0..<count)` on `count` threads at once (real concurrency for blocking clients,
/// which the 2-thread cooperative pool would serialize); returns every result in index order.
public func concurrently<T: Sendable>(
    _ count: Int,
    _ body: @escaping @Sendable (Int) throws -> T
) async -> [Result<T, any Error>] {
    guard count > 0 else { return [] }
    return await withCheckedContinuation { continuation in
        let results = Mutex<[Result<T, any Error>?]>(Array(repeating: nil, count: count))
        let remaining = Atomic<Int>(count)
        for i in 0..<count {
            let thread = Thread {
                let result = Result { try body(i) }
                results.withLock { $0[i] = result }
                if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                    continuation.resume(returning: results.withLock { $0.map { $0! } })
                }
            }
            thread.start()
        }
    }
}

/// Runs one blocking `body` on a thread of its own and returns (or throws) what it did.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await concurrently(1) { _ in try body() }[0].get()
}
