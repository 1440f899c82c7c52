// The scale-down driver with fakes of its three protocols and a manual clock: every path of
// decisions 0007, 0009, 0010, 0011 and 0017 that the end-to-end suites cover with root, containerd
// and CRIU, here in milliseconds.
import Testing
import ZPCore

@testable import ZPScaleDown

#if canImport(Glibc)
import Glibc
#endif

@Suite("Scale-down driver", .timeLimit(.minutes(1)))
struct ScaleDownDriverTests {
    // MARK: scale-down and restore

    @Test func idleContainer_isCheckpointed_andAConnectionRestoresItWithThePreparedRestore() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            #expect(h.driver.phase == .running)
            await h.scaleDown()
            #expect(h.redirect.activator.redirectOns == 1)
            let prepared = try #require(await h.preparedRestore())
            #expect(h.checkpoints.calls == ["checkpoint", "prepareRestore"])
            #expect(h.status.reports.first == .checkpointed(duration: .zero))

            try await h.redirect.connect()  // held until the restore finished
            #expect(h.driver.phase == .running)
            #expect(prepared.runs == 1 && prepared.discards == 1)
            #expect(h.control.adopted == [prepared.restoredPid])
            #expect(h.driver.pid == prepared.restoredPid)
            #expect(h.checkpoints.calls == ["checkpoint", "prepareRestore"])  // no second worker
            await eventually("redirect off, images removed") {
                h.redirect.offs >= 1 && h.checkpoints.imageRemovals >= 1
            }
            #expect(h.log.contains("restored process: \(prepared.restoredPid)"))
            #expect(h.status.reports.last == .restored(duration: .zero))
        }
    }

    /// Issue 15: a `ports-map` naming a port that another container of the pod listens on is
    /// refused (scale-down off, the reason logged), at arming and again at each scale-down, so this
    /// container's redirect never takes the other's connections.
    @Test func portsMapNamingAnotherContainersPort_turnsScaleDownOff() async throws {
        let atArming = Harness(ports: [8080])
        atArming.control.othersPorts.withLock { $0 = [8080] }
        try await atArming.running {
            await atArming.driver.started(pid: 100)
            await eventually("refused at arming") {
                atArming.log.contains("scale-down is off: zeropod.ctrox.dev/ports-map names port(s) [8080]")
            }
            #expect(!atArming.redirect.activatorMade)
            atArming.clock.advance(to: at(61))
            try await Task.sleep(for: .milliseconds(50))
            #expect(atArming.driver.phase == .running && atArming.checkpoints.calls.isEmpty)
        }

        // The other container listens only later: the next scale-down is refused.
        let later = Harness(ports: [8080])
        try await later.running {
            await later.start()
            later.control.othersPorts.withLock { $0 = [8080] }
            later.clock.advance(to: at(61))
            await eventually("refused at the scale-down") {
                later.log.contains("scale-down is off: zeropod.ctrox.dev/ports-map")
            }
            #expect(later.checkpoints.calls.isEmpty, "nothing was dumped")
            #expect(later.driver.phase == .running)
            // Off for good: the next deadline does not try again.
            later.clock.advance(to: at(200))
            try await Task.sleep(for: .milliseconds(50))
            #expect(later.checkpoints.calls.isEmpty && later.driver.phase == .running)
        }
    }

    /// Connections waiting in the application's accept queue at the idle deadline are activity:
    /// a checkpoint would reset them (CRIU dumps a listener, not its queue).
    @Test func queuedConnections_postponeTheScaleDown() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            h.control.queued.withLock { $0 = 3 }
            h.clock.advance(to: at(61))
            await eventually("re-armed from the deadline") { h.clock.sleepingUntil.contains(at(121)) }
            #expect(h.driver.phase == .running && h.checkpoints.calls.isEmpty)
            h.control.queued.withLock { $0 = 0 }
            await h.scaleDown(to: at(121))
        }
    }

    /// Listener pressure (dropped handshakes, SYN cookies) seen grown at a deadline keeps the
    /// container active for `listenerPressureHold` (120 s) from that deadline: those clients
    /// retransmit up to a minute apart with no state the queues show. A counter that stays put is
    /// no activity by itself, nor is the first reading (only a baseline, however high).
    @Test func listenerPressure_keepsTheContainerActiveForTheHold() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            h.control.pressure.withLock { $0 = 1000 }
            h.redirect.recorded.withLock { $0.lastActivity = at(50) }
            h.clock.advance(to: at(61))
            await eventually("re-armed to 110 s") { h.clock.sleepingUntil.contains(at(110)) }
            // Grew since: active at 110 s, and until 230 s although it stays put.
            h.control.pressure.withLock { $0 = 1007 }
            h.clock.advance(to: at(110))
            await eventually("re-armed from the deadline") { h.clock.sleepingUntil.contains(at(170)) }
            h.clock.advance(to: at(170))
            await eventually("held at 170 s") { h.clock.sleepingUntil.contains(at(230)) }
            #expect(h.driver.phase == .running && h.checkpoints.calls.isEmpty)
            // The hold is over: the scale-down goes ahead.
            await h.scaleDown(to: at(230))
        }
    }

    /// A process restored from a migrated checkpoint was idle on the old node: its idle deadline
    /// is now, so it scales down as soon as the activator is armed, without the clock moving on;
    /// traffic seen before the deadline is handled keeps it up as for any process.
    @Test func startedAlreadyIdle_scalesDownAtOnce_unlessTrafficCame() async throws {
        // A clock well past one scale-down duration, as CLOCK_MONOTONIC is after boot.
        let h = Harness(startingAt: at(1000))
        try await h.running {
            await h.driver.started(pid: 100, alreadyIdle: true)
            await eventually("scaled down at once") { h.driver.phase == .scaledDown }
            #expect(h.clock.now() == at(1000) && h.checkpoints.calls.contains("checkpoint"))
        }
        let busy = Harness(startingAt: at(1000))
        try await busy.running {
            busy.redirect.recorded.withLock { $0.lastActivity = at(999) }
            await busy.driver.started(pid: 100, alreadyIdle: true)
            await eventually("re-armed from the traffic") { busy.clock.sleepingUntil.contains(at(1059)) }
            #expect(busy.driver.phase == .running && busy.checkpoints.calls.isEmpty)
            await busy.scaleDown(to: at(1059))
        }
    }

    @Test func listenerPressure_unreadable_isNoActivity() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            h.control.pressure.withLock { $0 = 5 }
            h.redirect.recorded.withLock { $0.lastActivity = at(50) }
            h.clock.advance(to: at(61))
            await eventually("re-armed to 110 s") { h.clock.sleepingUntil.contains(at(110)) }
            h.control.pressure.withLock { $0 = nil }
            await h.scaleDown(to: at(110))
        }
    }

    @Test func timerOrders_armRealTimers_activityReArmsThem_andTheDeadlineDecides() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            #expect(h.driver.phase == .running)
            // Activity at 50 s, seen at the deadline (61 s): re-armed to 110 s.
            h.redirect.recorded.withLock { $0.lastActivity = at(50) }
            h.clock.advance(to: at(61))
            await eventually("re-armed to 110 s") { h.clock.sleepingUntil.contains(at(110)) }
            #expect(h.driver.phase == .running)
            #expect(h.checkpoints.calls.isEmpty)
            // Open connections keep it up too.
            h.redirect.recorded.withLock { $0.openConnections = 2 }
            h.clock.advance(to: at(110))
            await eventually("re-armed to 170 s") { h.clock.sleepingUntil.contains(at(170)) }
            #expect(h.checkpoints.calls.isEmpty)
            h.redirect.recorded.withLock { $0.openConnections = 0 }
            await h.scaleDown(to: at(170))
        }
    }

    @Test func execPinsTheContainer_itsEndArmsTheTimerAgain() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            try await h.driver.execNeedsApplication("e1")  // cancels the idle timer
            await eventually("idle timer cancelled") { h.driver.armedTimers.idle == nil }
            h.clock.advance(to: at(200))
            // The cancelled timer fires into nothing.
            await eventually("the cancelled timer woke") { !h.clock.sleepingUntil.contains(at(61)) }
            await h.driver.drain()
            #expect(h.driver.phase == .running)
            #expect(h.checkpoints.calls.isEmpty)
            await h.driver.execEnded("e1")  // armed again: 200 + 60
            #expect(h.driver.armedTimers.idle == at(260))
            await h.scaleDown(to: at(260))
        }
    }

    @Test func idleDeadlineBeforeTheActivatorExists_waitsForIt_andTheWindowStartsAtTheArming() async throws {
        let h = Harness(ports: [])  // ports are discovered: none yet
        try await h.running {
            await h.driver.started(pid: 100)
            h.clock.advance(to: at(61))
            await eventually("port discovery retried") { h.clock.sleepingUntil.contains { $0 > at(61) } }
            #expect(h.driver.phase == .running)  // no scale-down without a way back
            h.control.ports.withLock { $0 = [9090] }
            h.clock.advance(by: .seconds(3))
            await eventually("armed") { h.redirect.recorded.withLock { $0.madeFor } == [[9090]] }
            // Activity before the ports were found went unseen: the window starts at the arming
            // (one scale-down duration after it, not at once).
            let armedAt = h.clock.now()
            await eventually("re-armed from the arming") { h.clock.sleepingUntil.contains { $0 > armedAt } }
            #expect(h.driver.phase == .running && h.checkpoints.calls.isEmpty)
            h.clock.advance(by: .seconds(61))
            await eventually("scaled down a duration after the arming") { h.driver.phase == .scaledDown }
        }
    }

    @Test func connectionsDuringTheCheckpoint_wait_andTheContainerComesBackRightAfter() async throws {
        let h = Harness()
        let dump = Gate()
        h.checkpoints.checkpointScript.set([.hold(dump)])
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("checkpoint under way") { dump.arrived == 1 }
            #expect(h.driver.phase == .checkpointing)
            async let connection: Void = h.redirect.connect()
            await eventually("held") { h.driver.state.withLock { $0.lifecycle.heldConnections } == 1 }
            dump.open()
            try await connection
            #expect(h.driver.phase == .running)
            // No preparation: the restore came at once, with a worker of its own.
            #expect(h.checkpoints.calls == ["checkpoint", "restoreFully"])
        }
    }

    // MARK: lazy restore and its guard

    @Test func lazyRestore_keepsTheImagesUntilTheDaemonFinished() async throws {
        let h = Harness()
        h.checkpoints.lazy.withLock { $0 = true }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            try await h.redirect.connect()
            #expect(h.driver.phase == .running)
            #expect(prepared.discards == 0)  // the daemon still serves pages
            #expect(h.checkpoints.imageRemovals == 0)
            prepared.endDaemon(clean: true, how: "exit code 0")
            await h.advance(until: "images removed after the daemon") { h.checkpoints.imageRemovals == 1 }
            #expect(prepared.discards == 1)
            #expect(h.log.contains("criu lazy-pages (pid 900) finished"))
            #expect(h.control.signals.isEmpty)
        }
    }

    @Test func lazyGuard_aDaemonEndingEarly_killsTheContainer_andItsNextCheckpointFails() async throws {
        let h = Harness()
        h.checkpoints.lazy.withLock { $0 = true }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            try await h.redirect.connect()
            prepared.endDaemon(clean: false, how: "signal 9")
            await h.advance(until: "processes killed") { h.control.signals.contains { $0.signal == SIGKILL && $0.all } }
            #expect(h.log.contains("ended before serving every page (signal 9)", level: .error))
            #expect(
                h.status.reports.contains(
                    .restoreFailed(
                        reason:
                            "criu lazy-pages (pid 900) ended before serving every page (signal 9): the restored process of container c1 lacks pages it can no longer get"
                    )
                )
            )
            // The idle deadline of the restored process: its checkpoint is refused, not taken.
            h.clock.advance(to: at(200))
            await eventually("checkpoint failed") { h.log.contains("status CHECKPOINT_FAILED") }
            #expect(h.checkpoints.calls == ["checkpoint", "prepareRestore"])
            #expect(h.driver.phase == .running)
        }
    }

    @Test func lazyGuard_aCheckpointWaitsForABusyDaemon_andStopsItAfterTheLimit() async throws {
        let h = Harness()
        h.checkpoints.lazy.withLock { $0 = true }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            try await h.redirect.connect()  // restored at 61 s: next deadline 121 s
            h.clock.advance(to: at(121))
            await eventually("checkpoint waits for the daemon") {
                h.driver.state.withLock { $0.restoreSide.checkpointWaitsForDaemon }
            }
            #expect(h.driver.phase == .checkpointing)
            #expect(h.checkpoints.calls.filter { $0 == "checkpoint" }.count == 1)  // the first one only
            // Still serving just before the limit (60 s from 121 s): the checkpoint still waits.
            h.clock.advance(to: at(180.9))
            // (The consumer is busy with the waiting checkpoint: no drain() here.)
            await eventually("watcher looked") { h.clock.sleepingUntil.contains { $0 > at(180.9) } }
            #expect(h.driver.state.withLock { $0.restoreSide.checkpointWaitsForDaemon })
            await h.advance(until: "busy daemon stopped") { h.log.contains("killed (busy past a checkpoint's limit of 60 s") }
            await eventually("checkpoint refused") { h.driver.phase == .running }
            #expect(prepared.discards >= 1)
            #expect(h.control.signals.contains { $0.signal == SIGKILL && $0.all })
            #expect(h.checkpoints.calls.filter { $0 == "checkpoint" }.count == 1)
        }
    }

    @Test func lazyFallback_aFailedLazyRestore_isFollowedByAFullOne() async throws {
        let h = Harness()
        h.checkpoints.lazy.withLock { $0 = true }
        h.checkpoints.preparedRunScript.withLock { $0 = [.fail("uffd broke")] }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            try await h.redirect.connect()
            #expect(h.driver.phase == .running)
            #expect(prepared.runs == 1 && prepared.discards == 1)
            #expect(h.checkpoints.calls == ["checkpoint", "prepareRestore", "restoreFully"])
            #expect(h.log.contains("lazy restore failed: uffd broke; full restore from the same images"))
            #expect(h.driver.pid == 250)
            #expect(h.driver.phase == .running)
        }
    }

    @Test func lazyFallback_aDaemonGoneBeforeTheRestore_meansAFullRestore() async throws {
        let h = Harness()
        h.checkpoints.lazy.withLock { $0 = true }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            prepared.endDaemon(clean: true, how: "exit code 0")  // gone while scaled down
            try await h.redirect.connect()
            #expect(prepared.runs == 0 && prepared.discards == 1)
            #expect(h.checkpoints.calls == ["checkpoint", "prepareRestore", "restoreFully"])
            #expect(h.log.contains("exited before the restore; full restore from the same images"))
        }
    }

    // MARK: failures

    @Test func checkpointFailure_keepsItRunning_andLaterScaleDownsKill_andAConnectionColdStarts() async throws {
        let h = Harness()
        h.checkpoints.checkpointScript.set([.fail("dump failed")])
        try await h.running {
            await h.start()
            h.clock.advance(to: at(61))
            await eventually("checkpoint failed") { h.log.contains("status CHECKPOINT_FAILED") }
            #expect(h.driver.phase == .running)
            #expect(h.status.reports.contains(.checkpointFailed(reason: "dump failed")))
            await eventually("redirect off") { h.redirect.offs >= 1 }
            // Checkpointing is off for good: the next idle deadline kills.
            h.clock.advance(to: at(121))
            await eventually("killed for scale-down") { h.control.signals.contains { $0.signal == SIGKILL && $0.all } }
            await h.driver.processExited(pid: 100, status: 137)
            #expect(h.driver.phase == .scaledDown)
            #expect(h.control.exits.isEmpty)  // the scale-down kill's exit is not the container's
            try await h.redirect.connect()
            #expect(h.control.recorded.withLock { $0.coldStarts } == 1)
            #expect(h.driver.pid == 300)
            #expect(h.log.contains("cold started process: 300"))
        }
    }

    @Test func restoreFailure_coldStarts_andAFailedColdStartReportsExit1() async throws {
        let h = Harness()
        h.checkpoints.preparedRunScript.withLock { $0 = [.fail("restore failed")] }
        h.control.coldStartScript.set([.fail("runc create failed")])
        try await h.running {
            _ = try await h.scaledDownWithPreparedRestore()
            await #expect(throws: ScaleDownError.self) { try await h.redirect.connect() }
            #expect(h.driver.phase == .stopped)
            #expect(h.control.exits == [1])
            #expect(h.status.reports.filter { if case .restoreFailed = $0 { true } else { false } }.count == 2)
        }
    }

    @Test func incrementalCheckpointFailure_isRetriedOnceAsAPlainDump() async throws {
        let h = Harness(preDump: true)
        h.checkpoints.checkpointScript.set([.fail("parent broken")])
        try await h.running {
            await h.start()
            h.clock.advance(to: at(31))  // pre-dump timer
            await eventually("pre-dumped") { h.log.contains("pre-dump done") }
            h.clock.advance(to: at(61))
            await eventually("scaled down") { h.driver.phase == .scaledDown }
            #expect(h.checkpoints.calls.prefix(3) == ["preDump", "checkpoint incremental", "checkpoint"])
            #expect(h.log.contains("incremental checkpoint failed: parent broken"))
            #expect(!h.log.contains("status CHECKPOINT_FAILED"))
        }
    }

    @Test func preDumpFailure_turnsPreDumpsOff_andCheckpointsArePlain() async throws {
        let h = Harness(preDump: true)
        h.checkpoints.preDumpScript.set([.fail("no soft-dirty")])
        try await h.running {
            await h.start()
            h.clock.advance(to: at(31))
            await eventually("pre-dump failed") { h.log.contains("pre-dump failed") }
            await h.scaleDown(to: at(61))
            #expect(h.checkpoints.calls.prefix(2) == ["preDump", "checkpoint"])
        }
    }

    @Test func lostRedirect_keepsTheContainerUp() async throws {
        let h = Harness(withRedirect: false)
        try await h.running {
            await h.driver.started(pid: 100)
            await eventually("scale-down off") { !h.driver.state.withLock { $0.lifecycle.scaleDownEnabled } }
            await eventually("idle timer cancelled") { h.driver.armedTimers.idle == nil }
            h.clock.advance(to: at(500))
            await eventually("the cancelled timer woke") { h.clock.sleepingUntil.allSatisfy { $0 > at(500) } }
            await h.driver.drain()
            #expect(h.checkpoints.calls.isEmpty)
            #expect(h.driver.phase == .running)
        }
    }

    // MARK: wake groups

    @Test func wakeGroup_aConnectionThatRestores_wakesTheOtherMembersFirst() async throws {
        let h = Harness(wakeGroup: true)
        let restore = Gate()
        h.checkpoints.preparedRunScript.withLock { $0 = [.hold(restore)] }
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            async let connection: Void = h.redirect.connect()
            // The group is asked while this member's restore is still running.
            await eventually("group woken") { h.wakeGroup.requests == 1 && prepared.runs == 1 }
            restore.open()
            try await connection
            #expect(h.wakeGroup.requests == 1)
        }
        #expect(h.wakeGroup.left)
    }

    @Test func wakeGroup_aWakeFromTheGroup_isHeldUntilRunning_andWakesNoOne() async throws {
        let h = Harness(wakeGroup: true)
        try await h.running {
            await h.start()
            let running = try await h.driver.groupWakeRequested()
            #expect(running == .notScaledDown)
            await h.scaleDown()
            _ = await h.preparedRestore()
            let woken = try await h.driver.groupWakeRequested()
            #expect(woken == nil)  // held until it ran
            #expect(h.driver.phase == .running)
            #expect(h.wakeGroup.requests == 0)
        }
    }

    // MARK: execs, kill and delete

    @Test func execWhileScaledDown_restoresFirst_thenPinsTheContainer() async throws {
        let h = Harness()
        try await h.running {
            _ = try await h.scaledDownWithPreparedRestore()
            try await h.driver.execNeedsApplication("e1")
            #expect(h.driver.phase == .running)
            #expect(h.driver.armedTimers.idle == nil)  // pinned: no timer
            h.clock.advance(to: at(500))
            await h.driver.drain()
            #expect(h.driver.phase == .running)
            await #expect(throws: ScaleDownError.self) { try await h.driver.execNeedsApplication("e1") }
        }
    }

    @Test func killWhileScaledDown_stopsWithoutARestore() async throws {
        let h = Harness()
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            #expect(await h.driver.killRequested(signal: SIGTERM) == false)
            #expect(h.driver.phase == .stopped)
            #expect(h.control.exits == [0])
            #expect(prepared.runs == 0 && prepared.discards == 1)
            #expect(h.checkpoints.imageRemovals >= 1)
            #expect(h.control.adopted.isEmpty)
        }
    }

    @Test func killOfARunningContainer_isTheCallers_andAHangupWhileScaledDownWakesIt() async throws {
        let h = Harness()
        try await h.running {
            await h.start()
            #expect(await h.driver.killRequested(signal: SIGTERM) == true)
            await h.scaleDown()
            _ = await h.preparedRestore()
            #expect(await h.driver.killRequested(signal: SIGHUP) == false)
            await eventually("woken and signalled") { h.control.signals.contains { $0.signal == SIGHUP && !$0.all } }
            #expect(h.driver.phase == .running)
        }
    }

    @Test func deleteWhileScaledDown_cleansUpEverything() async throws {
        let h = Harness()
        try await h.running {
            let prepared = try await h.scaledDownWithPreparedRestore()
            await h.driver.deleteRequested()
            #expect(h.driver.phase == .stopped)
            #expect(h.control.exits == [0])
            #expect(prepared.discards == 1)
            #expect(h.checkpoints.imageRemovals >= 2)  // cleanupImages, then cleanupAll
        }
        #expect(h.redirect.offs >= 1)
    }

    @Test func stop_failsWhatIsHeld() async throws {
        let h = Harness()
        let restore = Gate()
        h.checkpoints.preparedRunScript.withLock { $0 = [.hold(restore)] }
        try await h.running {
            _ = try await h.scaledDownWithPreparedRestore()
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await #expect(throws: ScaleDownError.self) { try await h.redirect.connect() } }
                await eventually("restoring") { h.driver.phase == .restoring }
                await h.driver.stop()
                await group.waitForAll()
            }
            restore.open()
        }
    }
}
