// Waiting for a condition with a generous deadline (the machines are loaded 2-core VMs): never a
// fixed sleep for correctness.
import Foundation
import Glibc

/// Polls `condition` every `interval` seconds until it holds or `seconds` pass, blocking the
/// calling thread. In async code use ``eventuallyAsync(within:every:_:)``.
/// - Returns: whether the condition held (it is checked once more at the deadline).
public func eventually(
    within seconds: Double = 30,
    every interval: Double = 0.02,
    _ condition: () throws -> Bool
) rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        usleep(useconds_t(interval * 1_000_000))
    }
    return try condition()
}

/// The async variant of ``eventually(within:every:_:)``: sleeps with `Task.sleep`, so it does
/// not hold a thread of the cooperative pool while it waits.
public func eventuallyAsync(
    within seconds: Double = 30,
    every interval: Double = 0.02,
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
    }
    return try await condition()
}
