// Scenarios for each behaviour product.md promises ("Behaviour users rely on") and the original's
// lifecycle rules (original.md §2), driven event by event.
import Testing

@testable import ZPCore

private let pid = Fixture.pid

@Suite("Lifecycle: product behaviours")
struct LifecycleScenarioTests {
    // MARK: scaled down looks running

    @Test func scaledDown_looksRunningWithTheLastPid_andSuppressesTheCheckpointedExit() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        // CRIU ends the dumped process before it answers: the reaper sees the exit first.
        #expect(lc.event(.processExited(pid: pid, status: 137)) == [.suppressExit])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(180)))
                == [.emitStatus(.scaledDown, duration: .milliseconds(180), reason: nil)]
        )
        #expect(lc.phase == .scaledDown)
        #expect(lc.appearsRunning)
        #expect(lc.pid == pid)
        #expect(lc.phase.originalStatus == .scaledDown)
        // Reaped after the checkpoint finished: still suppressed.
        var late = Fixture.lifecycle(in: .scaledDown)
        #expect(late.event(.processExited(pid: pid, status: 137)) == [.suppressExit])
        #expect(late.appearsRunning)
    }

    @Test func restoredProcess_staleExitOfTheOldPid_isSuppressed_newPidExitIsReported() {
        var lc = Fixture.lifecycle(in: .restoring)
        _ = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70)))
        #expect(lc.pid == 200)
        #expect(lc.event(.processExited(pid: pid, status: 137)) == [.suppressExit])
        #expect(
            lc.event(.processExited(pid: 200, status: 2))
                == [.cancelIdleTimer, .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 2)]
        )
        #expect(lc.exitStatus == 2)
    }

    // MARK: probes

    @Test func probe_whileScaledDown_isAnsweredWithoutRestoring() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        for _ in 0..<5 { #expect(lc.event(.probeArrived) == [.answerProbe]) }
        #expect(lc.phase == .scaledDown)
        #expect(lc.heldConnections == 0)
    }

    @Test func probe_whileRunning_isForwarded_andDoesNotPostponeScaleDown() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.event(.probeArrived) == [.forwardConnection])
        #expect(lc.idleDeadline == Fixture.deadline)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: Fixture.deadline)) == [
                .enableRedirect, .startCheckpoint,
            ]
        )
    }

    // MARK: exec

    @Test func exec_intoScaledDown_restoresFirst_andTheExecWaits() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.execStarted(id: "sh")) == [.holdExec(id: "sh"), .startRestore])
        #expect(lc.phase == .restoring)
        #expect(lc.event(.execStarted(id: "ls")) == [.holdExec(id: "ls")])
        #expect(
            lc.event(.restoreFinished(pid: 200, duration: .milliseconds(80), now: at(100)))
                == [
                    .startHeldExecs(ids: ["sh", "ls"]), .disableRedirect, .cleanupImages,
                    .emitStatus(.running, duration: .milliseconds(80), reason: nil),
                ]
        )
        // Execs pin the container: no timer until the last one ends.
        #expect(lc.idleDeadline == nil)
        #expect(lc.runningExecs == ["sh", "ls"])
        #expect(lc.event(.execEnded(id: "sh", now: at(110))) == [])
        #expect(lc.event(.execEnded(id: "ls", now: at(120))) == [.armIdleTimer(deadline: at(180))])
    }

    @Test func exec_whileRunning_pinsTheContainer_noScaleDownUntilTheLastExecEnds() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.event(.execStarted(id: "a")) == [.cancelIdleTimer, .startExec(id: "a")])
        #expect(lc.event(.execStarted(id: "b")) == [.startExec(id: "b")])
        // The cancelled timer may still fire (race): ignored.
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(500))) == [])
        #expect(lc.phase == .running)
        #expect(lc.event(.execEnded(id: "a", now: at(600))) == [])
        #expect(lc.event(.execEnded(id: "b", now: at(601))) == [.armIdleTimer(deadline: at(661))])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(661))) == [.enableRedirect, .startCheckpoint])
    }

    @Test func exec_duringCheckpoint_waits_thenRestoresRightAfter() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        #expect(lc.event(.execStarted(id: "sh")) == [.holdExec(id: "sh")])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(200)))
                == [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil), .startRestore]
        )
        #expect(lc.phase == .restoring)
        #expect(lc.heldExecs == ["sh"])
    }

    @Test func exec_cancelledWhileHeld_isForgotten_andNoWakeAfterTheCheckpoint() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        _ = lc.event(.execStarted(id: "sh"))
        #expect(lc.event(.execEnded(id: "sh", now: at(62))) == [])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(200)))
                == [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil)]
        )
        #expect(lc.phase == .scaledDown)
    }

    @Test func exec_whenColdStartFails_isFailed_andExitIsOne() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        _ = lc.event(.execStarted(id: "sh"))
        _ = lc.event(.restoreFailed(reason: "r"))
        #expect(
            lc.event(.coldStartFailed(reason: "c"))
                == [
                    .failHeldExecs(ids: ["sh"]), .disableRedirect,
                    .emitStatus(.restoreFailed, duration: nil, reason: "c"),
                    .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 1),
                ]
        )
    }

    // MARK: kill and delete while scaled down

    @Test(arguments: [(Int32(15), Int32(0)), (9, 137), (2, 0), (3, 0)])
    func kill_whileScaledDown_stopsWithoutRestore(signal: Int32, status: Int32) {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(
            lc.event(.killRequested(signal: signal))
                == [
                    .disableRedirect, .cleanupImages, .emitStatus(.stopping, duration: nil, reason: nil),
                    .reportExit(status: status),
                ]
        )
        #expect(lc.phase == .stopped)
        #expect(!lc.appearsRunning)
        #expect(lc.event(.deleteRequested) == [.cleanupAll])
        #expect(lc.event(.deleteRequested) == [])
        #expect(lc.event(.connectionArrived) == [.refuseConnection])
    }

    @Test func kill_signalZero_whileScaledDown_changesNothing() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.killRequested(signal: 0)) == [])
        #expect(lc.phase == .scaledDown)
    }

    @Test func kill_withAHandledSignal_whileScaledDown_wakesAndDeliversIt() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.killRequested(signal: 1)) == [.deferSignal(signal: 1), .startRestore])
        let actions = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(70), now: at(100)))
        #expect(actions.last == .signalProcess(signal: 1))
        #expect(lc.phase == .running)
    }

    @Test func delete_whileScaledDown_withoutKill_cleansUpEverything() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(
            lc.event(.deleteRequested)
                == [
                    .disableRedirect, .cleanupImages, .emitStatus(.stopping, duration: nil, reason: nil),
                    .reportExit(status: 0), .cleanupAll,
                ]
        )
        #expect(lc.event(.deleteRequested) == [])
    }

    @Test func kill_whileScaledDownByKill_hasNoImageToClean() {
        var lc = Fixture.lifecycle(in: .scalingDownByKill)
        _ = lc.event(.processExited(pid: pid, status: 137))
        #expect(!lc.hasCheckpointImage)
        #expect(
            lc.event(.killRequested(signal: 15))
                == [.disableRedirect, .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 0)]
        )
    }

    // MARK: kill during an operation is deferred

    @Test func kill_duringCheckpoint_isDeferred_thenStopsAndFailsHeldConnections() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(lc.event(.killRequested(signal: 15)) == [.deferSignal(signal: 15)])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(200)))
                == [
                    .emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil), .failHeldConnections(count: 1),
                    .disableRedirect, .cleanupImages, .emitStatus(.stopping, duration: nil, reason: nil),
                    .reportExit(status: 0),
                ]
        )
        #expect(lc.phase == .stopped)
    }

    @Test func kill_duringCheckpointThatFails_isDeliveredToTheStillRunningProcess() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        _ = lc.event(.killRequested(signal: 15))
        let actions = lc.event(.checkpointFailed(reason: "x", now: at(62)))
        #expect(actions.last == .signalProcess(signal: 15))
        #expect(lc.phase == .running)
    }

    @Test func kill_duringRestore_isDeliveredAfterTheRestore() {
        var lc = Fixture.lifecycle(in: .restoring)
        #expect(lc.event(.killRequested(signal: 9)) == [.deferSignal(signal: 9)])
        #expect(lc.deferredSignals == [9])
        #expect(
            lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70)))
                == [
                    .releaseHeldConnections(count: 1), .disableRedirect, .cleanupImages,
                    .emitStatus(.running, duration: .milliseconds(90), reason: nil), .armIdleTimer(deadline: at(130)),
                    .signalProcess(signal: 9),
                ]
        )
        #expect(
            lc.event(.processExited(pid: 200, status: 137))
                == [.cancelIdleTimer, .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 137)]
        )
    }

    @Test func kill_duringScaleDownKill_reportsTheRealExit() {
        var lc = Fixture.lifecycle(in: .scalingDownByKill)
        _ = lc.event(.killRequested(signal: 15))
        #expect(
            lc.event(.processExited(pid: pid, status: 137))
                == [.disableRedirect, .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 137)]
        )
    }

    @Test func delete_ofALiveProcess_isRefused_untilItExits() {
        for phase in [LC.Phase.running, .checkpointing, .scalingDownByKill, .restoring, .coldStarting] {
            var lc = Fixture.lifecycle(in: phase)
            #expect(lc.event(.deleteRequested) == [], "\(phase)")
            #expect(lc.phase == phase)
        }
    }

    // MARK: checkpoint failure

    @Test func checkpointFailure_keepsServing_emitsTheLogTail_andLaterScaleDownsKill() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        let tail = "Error (criu/sk-inet.c:...): unsupported socket"
        #expect(
            lc.event(.checkpointFailed(reason: tail, now: at(62)))
                == [
                    .disableRedirect, .cleanupImages, .emitStatus(.checkpointFailed, duration: nil, reason: tail),
                    .releaseHeldConnections(count: 1), .armIdleTimer(deadline: at(122)),
                ]
        )
        #expect(lc.phase == .running)
        #expect(lc.pid == pid)
        #expect(!lc.checkpointingEnabled)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(122))) == [.enableRedirect, .startScaleDownKill]
        )
        #expect(
            lc.event(.processExited(pid: pid, status: 137))
                == [.suppressExit, .emitStatus(.scaledDown, duration: nil, reason: nil)]
        )
        // The wake-up of a killed container is a cold start.
        #expect(lc.event(.connectionArrived) == [.holdConnection, .startColdStart])
        #expect(
            lc.event(.coldStartFinished(pid: 300, now: at(200)))
                == [
                    .releaseHeldConnections(count: 1), .disableRedirect,
                    .emitStatus(.running, duration: nil, reason: nil),
                    .armIdleTimer(deadline: at(260)),
                ]
        )
    }

    @Test func checkpointFailure_afterTheProcessDied_reportsItsExit() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        _ = lc.event(.connectionArrived)
        #expect(lc.event(.processExited(pid: pid, status: 139)) == [.suppressExit])
        #expect(
            lc.event(.checkpointFailed(reason: "x", now: at(62)))
                == [
                    .disableRedirect, .cleanupImages, .emitStatus(.checkpointFailed, duration: nil, reason: "x"),
                    .failHeldConnections(count: 1), .emitStatus(.stopping, duration: nil, reason: nil),
                    .reportExit(status: 139),
                ]
        )
    }

    // MARK: restore failure

    @Test func restoreFailure_coldStartsOnce_thenRunsWithCheckpointingOff() {
        var lc = Fixture.lifecycle(in: .restoring)
        #expect(
            lc.event(.restoreFailed(reason: "bad image"))
                == [.cleanupImages, .emitStatus(.restoreFailed, duration: nil, reason: "bad image"), .startColdStart]
        )
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(lc.event(.restoreFailed(reason: "again")) == [], "a second restore failure cannot happen")
        _ = lc.event(.coldStartFinished(pid: 300, now: at(70)))
        #expect(lc.phase == .running)
        #expect(!lc.checkpointingEnabled)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(130))) == [.enableRedirect, .startScaleDownKill]
        )
    }

    @Test func coldStartFailure_reportsExitOne_soTheKubeletRestartsIt() {
        var lc = Fixture.lifecycle(in: .coldStarting)
        _ = lc.event(.connectionArrived)
        #expect(
            lc.event(.coldStartFailed(reason: "runc create failed"))
                == [
                    .failHeldConnections(count: 2), .disableRedirect,
                    .emitStatus(.restoreFailed, duration: nil, reason: "runc create failed"),
                    .emitStatus(.stopping, duration: nil, reason: nil), .reportExit(status: 1),
                ]
        )
        #expect(lc.exitStatus == 1)
    }

    // MARK: connections during restore

    @Test func connections_duringRestore_areAllHeld_andReleasedOnce() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.connectionArrived) == [.holdConnection, .startRestore])
        for _ in 0..<49 { #expect(lc.event(.connectionArrived) == [.holdConnection]) }
        #expect(lc.heldConnections == 50)
        let actions = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(95), now: at(70)))
        #expect(actions.first == .releaseHeldConnections(count: 50))
        #expect(lc.heldConnections == 0)
        #expect(lc.event(.connectionArrived) == [.forwardConnection])
    }

    @Test func connection_duringCheckpoint_isHeld_andRestoresRightAfter() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(200)))
                == [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil), .startRestore]
        )
        #expect(lc.heldConnections == 1)
    }

    // MARK: idle timer

    @Test func idleDeadline_withRecentActivity_reArmsForTheRest() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(31), now: at(61))) == [.armIdleTimer(deadline: at(91))])
        // Activity recorded by the activator counts too, and the newest stamp wins.
        #expect(lc.event(.activitySeen(at: at(80))) == [])
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(50), now: at(91))) == [.armIdleTimer(deadline: at(140))])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(140))) == [.enableRedirect, .startCheckpoint])
    }

    @Test func idleDeadline_activityExactlyOneWindowAgo_scalesDown() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(1), now: at(61))) == [.enableRedirect, .startCheckpoint]
        )
    }

    @Test func idleDeadline_staleFiring_beforeTheArmedDeadline_isIgnored() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(60))) == [])
        #expect(lc.idleDeadline == at(61))
    }

    @Test func openLongLivedConnection_countsAsActivity() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(2), openConnections: 1, now: at(61)))
                == [.armIdleTimer(deadline: at(121))]
        )
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(2), openConnections: 0, now: at(121))) == [
                .enableRedirect, .startCheckpoint,
            ]
        )

        var ignoring = LC(configuration: .init(scaleDownDuration: .seconds(60), openConnectionsCountAsActivity: false))
        _ = ignoring.event(.started(pid: pid, now: at(1)))
        #expect(
            ignoring.event(.idleDeadlineReached(lastActivity: at(1), openConnections: 3, now: at(61)))
                == [.enableRedirect, .startCheckpoint]
        )
    }

    @Test(arguments: [Duration.zero, .seconds(-1)])
    func zeroScaleDownDuration_neverArmsTheTimer(duration: Duration) {
        var lc = LC(configuration: .init(scaleDownDuration: duration))
        #expect(lc.event(.started(pid: pid, now: at(1))) == [.emitStatus(.running, duration: nil, reason: nil)])
        #expect(!lc.scaleDownEnabled)
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(1_000_000))) == [])
        _ = lc.event(.execStarted(id: "x"))
        #expect(lc.event(.execEnded(id: "x", now: at(2_000_000))) == [])
        #expect(lc.phase == .running)
    }

    @Test func redirectUnavailable_disablesScaleDownForGood() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.event(.redirectUnavailable(reason: "sk_lookup: not supported")) == [.cancelIdleTimer])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [])
        _ = lc.event(.execStarted(id: "x"))
        #expect(lc.event(.execEnded(id: "x", now: at(70))) == [])
        #expect(lc.idleDeadline == nil)
    }

    // MARK: disable-checkpointing

    @Test func disableCheckpointing_scalesDownByKill_andWakesByColdStart() {
        var lc = Fixture.lifecycle(in: .running)
        lc = LC(configuration: Fixture.killConfig)
        _ = lc.event(.started(pid: pid, now: at(1)))
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [.enableRedirect, .startScaleDownKill]
        )
        #expect(lc.phase == .scalingDownByKill)
        #expect(lc.phase.originalStatus == .running)
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(
            lc.event(.processExited(pid: pid, status: 137))
                == [.suppressExit, .emitStatus(.scaledDown, duration: nil, reason: nil), .startColdStart]
        )
        #expect(lc.phase == .coldStarting)
    }

    // MARK: ZPInstant

    @Test func instant_arithmetic_clampsAndMeasures() {
        #expect(at(1).advanced(by: .milliseconds(1500)) == ZPInstant(nanoseconds: 2_500_000_000))
        #expect(at(1).advanced(by: .seconds(-5)) == .zero)
        #expect(ZPInstant(nanoseconds: .max - 1).advanced(by: .seconds(1)).nanoseconds == .max)
        #expect(at(1).duration(to: at(3)) == .seconds(2))
        #expect(at(3).duration(to: at(1)) == .seconds(-2))
        #expect(ZPInstant(nanoseconds: 12_000_000_500).description == "12.000000500s")
        #expect(at(1) < at(2))
    }
}

@Suite("Lifecycle: redirect lost")
struct LifecycleRedirectLostTests {
    @Test func redirectLost_whileScaledDown_wakesAtOnce() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.redirectUnavailable(reason: "activator gone")) == [.startRestore])
        #expect(
            lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70)))
                == [.disableRedirect, .cleanupImages, .emitStatus(.running, duration: .milliseconds(90), reason: nil)]
        )
        #expect(lc.idleDeadline == nil)
        #expect(!lc.scaleDownEnabled)
    }

    @Test func redirectLost_duringCheckpoint_wakesWhenItFinishes() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        #expect(lc.event(.redirectUnavailable(reason: "activator gone")) == [])
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(200)))
                == [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil), .startRestore]
        )
    }
}
