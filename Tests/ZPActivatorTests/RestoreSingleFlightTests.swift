import Testing

@testable import ZPActivator

/// Event-by-event tests of the pure single-flight gate (waiters are plain strings).
@Suite struct RestoreSingleFlightTests {
    private func woken(_ action: RestoreSingleFlight<String>.RestoreEndAction) -> [String]? {
        if case .wake(let waiters) = action { return waiters }
        return nil
    }

    @Test func firstConnection_whenScaledDown_startsRestoreWithoutStoringWaiter() {
        var gate = RestoreSingleFlight<String>()
        #expect(gate.phase == .scaledDown)
        #expect(gate.connectionNeedsApp(id: 1, waiter: "a") == .startRestore)
        #expect(gate.phase == .restoring(parked: 0))
    }

    @Test func laterConnections_whileRestoring_areParkedInOrder_andWokenOnceOnSuccess() {
        var gate = RestoreSingleFlight<String>()
        #expect(gate.connectionNeedsApp(id: 1, waiter: "a") == .startRestore)
        for i in 2...500 {
            #expect(gate.connectionNeedsApp(id: i, waiter: "w\(i)") == .park)
        }
        #expect(gate.phase == .restoring(parked: 499))
        let waiters = woken(gate.restoreSucceeded())
        #expect(waiters == (2...500).map { "w\($0)" })
        #expect(gate.phase == .running)
        // A second success report (a bug in a caller) wakes nobody twice.
        #expect(woken(gate.restoreSucceeded()) == nil)
    }

    @Test func connection_whenRunning_proceeds() {
        var gate = RestoreSingleFlight<String>(startsScaledDown: false)
        #expect(gate.phase == .running)
        #expect(gate.connectionNeedsApp(id: 1, waiter: "a") == .proceed)
        #expect(gate.phase == .running)
    }

    @Test func restoreFailure_failsParkedWaiters_andRearms() {
        var gate = RestoreSingleFlight<String>()
        _ = gate.connectionNeedsApp(id: 1, waiter: "a")
        _ = gate.connectionNeedsApp(id: 2, waiter: "b")
        _ = gate.connectionNeedsApp(id: 3, waiter: "c")
        #expect(woken(gate.restoreFailed()) == ["b", "c"])
        #expect(gate.phase == .scaledDown)
        #expect(gate.connectionNeedsApp(id: 4, waiter: "d") == .startRestore)
    }

    @Test func restoreEnd_whenNotRestoring_isIgnored() {
        var gate = RestoreSingleFlight<String>()
        #expect(woken(gate.restoreSucceeded()) == nil)
        #expect(woken(gate.restoreFailed()) == nil)
        #expect(gate.phase == .scaledDown)
    }

    @Test func cancelledWaiter_isRemovedOnce_andNotWokenLater() {
        var gate = RestoreSingleFlight<String>()
        _ = gate.connectionNeedsApp(id: 1, waiter: "a")
        _ = gate.connectionNeedsApp(id: 2, waiter: "b")
        _ = gate.connectionNeedsApp(id: 3, waiter: "c")
        #expect(gate.waiterCancelled(id: 2) == "b")
        #expect(gate.waiterCancelled(id: 2) == nil)
        #expect(gate.waiterCancelled(id: 1) == nil)  // the restorer is not parked
        #expect(woken(gate.restoreSucceeded()) == ["c"])
        #expect(gate.waiterCancelled(id: 3) == nil)
    }

    @Test func appScaledDown_rearmsFromRunning_andIsIgnoredWhileRestoring() {
        var gate = RestoreSingleFlight<String>(startsScaledDown: false)
        #expect(gate.appScaledDown() == .armed)
        #expect(gate.phase == .scaledDown)
        #expect(gate.appScaledDown() == .armed)
        _ = gate.connectionNeedsApp(id: 1, waiter: "a")
        #expect(gate.appScaledDown() == .ignoredWhileRestoring)
        #expect(gate.phase == .restoring(parked: 0))
        _ = gate.restoreSucceeded()
        #expect(gate.appScaledDown() == .armed)
        #expect(gate.connectionNeedsApp(id: 2, waiter: "b") == .startRestore)
    }

    @Test func stop_failsParkedWaiters_rejectsLaterConnections_andIgnoresLateRestoreEnd() {
        var gate = RestoreSingleFlight<String>()
        _ = gate.connectionNeedsApp(id: 1, waiter: "a")
        _ = gate.connectionNeedsApp(id: 2, waiter: "b")
        #expect(gate.stop() == ["b"])
        #expect(gate.phase == .stopped)
        #expect(gate.connectionNeedsApp(id: 3, waiter: "c") == .reject)
        #expect(woken(gate.restoreSucceeded()) == nil)
        #expect(gate.appScaledDown() == .ignoredWhileStopped)
        #expect(gate.stop() == [])
    }
}
