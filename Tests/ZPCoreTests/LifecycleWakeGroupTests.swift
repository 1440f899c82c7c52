// Wake groups in the lifecycle (decision 0011): when a connection or exec starts bringing a member
// back, the lifecycle orders `wakeGroup` (before the restore, so the members' restores run beside
// it); a wake that came from the group is held like a connection and never wakes the group again.
import Testing

@testable import ZPCore

private let member = LC.Configuration(scaleDownDuration: .seconds(60), wakesGroup: true)
private let killingMember = LC.Configuration(
    scaleDownDuration: .seconds(60),
    checkpointingEnabled: false,
    wakesGroup: true
)

/// A wake group member driven into `phase` (restoring/coldStarting hold one connection).
private func member(in phase: LC.Phase) -> LC {
    var lc = LC(configuration: phase == .scalingDownByKill ? killingMember : member)
    var events: [LC.Event] = []
    let start: LC.Event = .started(pid: Fixture.pid, now: at(1))
    let idle: LC.Event = .idleDeadlineReached(lastActivity: nil, now: at(61))
    let dumped: LC.Event = .checkpointFinished(duration: .milliseconds(200))
    switch phase {
    case .created: break
    case .running: events = [start]
    case .checkpointing, .scalingDownByKill: events = [start, idle]
    case .scaledDown: events = [start, idle, dumped]
    case .restoring: events = [start, idle, dumped, .groupWakeRequested]
    case .coldStarting: events = [start, idle, dumped, .groupWakeRequested, .restoreFailed(reason: "x")]
    case .stopped: events = [start, .processExited(pid: Fixture.pid, status: 0)]
    }
    for e in events { _ = lc.event(e) }
    precondition(lc.phase == phase, "member fixture for \(phase) reached \(lc.phase)")
    return lc
}

@Suite("Lifecycle: wake groups")
struct LifecycleWakeGroupTests {
    @Test func connectionThatStartsARestore_wakesTheGroupFirst() {
        var lc = member(in: .scaledDown)
        #expect(lc.event(.connectionArrived) == [.holdConnection, .wakeGroup, .startRestore])
        // Later connections join the restore under way.
        #expect(lc.event(.connectionArrived) == [.holdConnection])
    }

    @Test func execThatStartsAColdStart_wakesTheGroupFirst() {
        var lc = LC(configuration: killingMember)
        for e: LC.Event in [
            .started(pid: Fixture.pid, now: at(1)), .idleDeadlineReached(lastActivity: nil, now: at(61)),
            .processExited(pid: Fixture.pid, status: 137),
        ] { _ = lc.event(e) }
        #expect(lc.phase == .scaledDown)
        #expect(lc.event(.execStarted(id: "e")) == [.holdExec(id: "e"), .wakeGroup, .startColdStart])
    }

    @Test(arguments: [LC.Phase.checkpointing, .scalingDownByKill])
    func firstWaiterOfAScaleDownInFlight_wakesTheGroup_laterOnesDoNot(phase: LC.Phase) {
        var lc = member(in: phase)
        #expect(lc.event(.connectionArrived) == [.holdConnection, .wakeGroup])
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(lc.event(.execStarted(id: "e")) == [.holdExec(id: "e")])
        var viaExec = member(in: phase)
        #expect(viaExec.event(.execStarted(id: "e")) == [.holdExec(id: "e"), .wakeGroup])
        #expect(viaExec.event(.connectionArrived) == [.holdConnection])
    }

    @Test(arguments: [LC.Phase.created, .running, .restoring, .coldStarting, .stopped])
    func connectionsAndExecsThatStartNothing_doNotWakeTheGroup(phase: LC.Phase) {
        var lc = member(in: phase)
        #expect(!lc.event(.connectionArrived).contains(.wakeGroup))
        #expect(!lc.event(.execStarted(id: "e")).contains(.wakeGroup))
    }

    @Test func otherWakes_doNotWakeTheGroup() {
        // A signal the app handles, and a lost redirect, wake the container but not its group.
        var signalled = member(in: .scaledDown)
        #expect(signalled.event(.killRequested(signal: 1)) == [.deferSignal(signal: 1), .startRestore])
        var lost = member(in: .scaledDown)
        #expect(lost.event(.redirectUnavailable(reason: "gone")) == [.startRestore])
    }

    @Test func withoutAGroup_nothingWakesOne() {
        var lc = Fixture.lifecycle(in: .scaledDown)
        #expect(lc.event(.connectionArrived) == [.holdConnection, .startRestore])
        var inFlight = Fixture.lifecycle(in: .checkpointing)
        #expect(inFlight.event(.execStarted(id: "e")) == [.holdExec(id: "e")])
    }

    @Test func wakeFromTheGroup_isHeldLikeAConnection_andNeverWakesTheGroupAgain() {
        var lc = member(in: .scaledDown)
        #expect(lc.event(.groupWakeRequested) == [.holdConnection, .startRestore])
        #expect(lc.heldConnections == 1)
        // A connection now joins the restore the group started: no second wave.
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(
            lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70))).first
                == .releaseHeldConnections(count: 2)
        )
        var inFlight = member(in: .checkpointing)
        #expect(inFlight.event(.groupWakeRequested) == [.holdConnection])
        // The group's wake was the first waiter: a connection after it does not wake the group.
        #expect(inFlight.event(.connectionArrived) == [.holdConnection])
        #expect(
            inFlight.event(.checkpointFinished(duration: .milliseconds(200))) == [
                .emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil), .startRestore,
            ]
        )
    }

    @Test func wakeFromTheGroup_isAnsweredAtOnce_whenTheContainerDoesNotWait() {
        let expected: [(LC.Phase, LC.GroupWakeAnswer)] = [
            (.created, .notScaledDown), (.running, .notScaledDown), (.restoring, .alreadyWaking),
            (.coldStarting, .alreadyWaking), (.stopped, .stopped),
        ]
        for (phase, answer) in expected {
            var lc = member(in: phase)
            let before = LifecycleSnapshot(lc)
            #expect(lc.event(.groupWakeRequested) == [.answerGroupWake(answer)], "\(phase)")
            #expect(LifecycleSnapshot(lc) == before, "\(phase): a group wake answered at once changes nothing")
        }
    }

    @Test func heldGroupWake_failsWithTheConnections_whenTheContainerCannotComeBack() {
        var lc = member(in: .scaledDown)
        _ = lc.event(.groupWakeRequested)
        _ = lc.event(.restoreFailed(reason: "restore failed"))
        let actions = lc.event(.coldStartFailed(reason: "cold start failed"))
        #expect(actions.first == .failHeldConnections(count: 1))
        #expect(lc.phase == .stopped)
    }
}
