// The scale-down driver in a dry run (`zeropod.ctrox.dev/dry-run`, decision 0031): the idle timer
// and the activity polls run on the manual clock, the container is never checkpointed, killed,
// pre-dumped or redirected, and the status sink gets the would-events with the running phase.
import Testing
import ZPCore

@testable import ZPScaleDown

@Suite("Scale-down driver: dry run", .timeLimit(.minutes(1)))
struct DryRunDriverTests {
    /// Nothing was done to the container: no CRIU call, no redirect, no signal, same pid.
    private func untouched(_ h: Harness, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(h.checkpoints.calls.isEmpty, "CRIU calls: \(h.checkpoints.calls)", sourceLocation: sourceLocation)
        #expect(h.redirect.activator.redirectOns == 0, "redirect switched on", sourceLocation: sourceLocation)
        #expect(h.control.signals.isEmpty, "signals: \(h.control.signals)", sourceLocation: sourceLocation)
        #expect(h.control.recorded.withLock { $0.coldStarts } == 0, sourceLocation: sourceLocation)
        #expect(h.driver.phase == .running && h.driver.pid == 100, sourceLocation: sourceLocation)
        #expect(h.driver.processRuns, sourceLocation: sourceLocation)
    }

    @Test func idleDeadline_reportsWouldScaleDown_andLeavesTheContainerAlone() async throws {
        let h = Harness(preDump: true, dryRun: true)
        try await h.running {
            await h.start()
            #expect(h.log.contains("scale-down armed"))
            #expect(h.driver.armedTimers.preDump == nil, "a dry run arms no pre-dump")
            h.clock.advance(to: at(61))
            await eventually("would scale down") { h.status.reports == [.wouldScaleDown] }
            #expect(h.log.contains("dry run: would have scaled down after 1m0s of inactivity"))
            #expect(h.status.changes.withLock { $0.last.map { $0.0 == .running && $0.1 == 100 } } == true)
            #expect(h.driver.state.withLock { $0.lifecycle.dryRunScaledDown })
            // The traffic poll is armed a second ahead.
            await eventually("poll armed") { h.clock.sleepingUntil.contains(at(62)) }
            untouched(h)
        }
    }

    @Test func trafficAfterTheVirtualScaleDown_reportsWouldRestore_thenTheCycleStartsOver() async throws {
        let h = Harness(dryRun: true)
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("would scale down") { h.status.reports == [.wouldScaleDown] }
            // Quiet polls: nothing is reported.
            for second in 62...65 {
                h.clock.advance(to: at(Double(second)))
                await eventually("poll \(second + 1) armed") { h.driver.armedTimers.idle == at(Double(second + 1)) }
            }
            #expect(h.status.reports == [.wouldScaleDown])
            // Traffic at 65.5 s: the poll at 66 s reports the restore that would have happened.
            h.redirect.recorded.withLock { $0.lastActivity = at(65.5) }
            h.clock.advance(to: at(66))
            await eventually("would restore") { h.status.reports == [.wouldScaleDown, .wouldRestore] }
            #expect(h.log.contains("dry run: would have restored (traffic 500.0 ms ago)"))
            #expect(h.driver.armedTimers.idle == at(126), "the idle window starts over")
            #expect(!h.driver.state.withLock { $0.lifecycle.dryRunScaledDown })
            // Idle for the whole window again: the next virtual scale-down.
            h.clock.advance(to: at(126))
            await eventually("second would scale down") {
                h.status.reports == [.wouldScaleDown, .wouldRestore, .wouldScaleDown]
            }
            untouched(h)
        }
    }

    @Test func stampsThatDoNotMove_keepItVirtuallyDown() async throws {
        // Probes and loopback never move the activity stamp (the tracker filters them by source
        // address), and neither does traffic from before the virtual scale-down.
        let h = Harness(dryRun: true)
        h.redirect.recorded.withLock { $0.lastActivity = at(0.5) }
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("would scale down") { h.status.reports == [.wouldScaleDown] }
            await h.advance(until: "ten quiet polls", step: .milliseconds(500)) {
                h.driver.armedTimers.idle.map { $0 >= at(71) } ?? false
            }
            await h.driver.drain()
            #expect(h.status.reports == [.wouldScaleDown])
            #expect(h.driver.state.withLock { $0.lifecycle.dryRunScaledDown })
            untouched(h)
        }
    }

    @Test func exec_whileVirtuallyDown_isAWouldRestore_andStartsAtOnce() async throws {
        let h = Harness(dryRun: true)
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("would scale down") { h.status.reports == [.wouldScaleDown] }
            try await h.driver.execNeedsApplication("sh")  // no restore to wait for
            await eventually("would restore") { h.status.reports == [.wouldScaleDown, .wouldRestore] }
            #expect(h.log.contains("dry run: would have restored (exec sh)"))
            await eventually("timer cancelled") { h.driver.armedTimers.idle == nil }
            h.clock.advance(to: at(70))
            await h.driver.execEnded("sh")
            #expect(h.driver.armedTimers.idle == at(130))
            untouched(h)
        }
    }

    @Test func connectionThroughTheActivator_isForwarded_andIsNoRestore() async throws {
        // The redirect never steers in a dry run; if the activator saw a connection anyway it
        // goes straight to the running application.
        let h = Harness(dryRun: true)
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("would scale down") { h.status.reports == [.wouldScaleDown] }
            try await h.redirect.connect()
            await h.driver.drain()
            #expect(h.status.reports == [.wouldScaleDown])
            untouched(h)
        }
    }

    @Test func withoutADryRun_theSameDeadlineCheckpoints() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            await h.scaleDown()
            #expect(h.checkpoints.calls.first == "checkpoint")
            #expect(!h.status.reports.contains(.wouldScaleDown))
        }
    }
}
