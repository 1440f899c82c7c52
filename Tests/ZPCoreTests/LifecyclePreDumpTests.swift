// Pre-dump while idle (`zeropod.ctrox.dev/pre-dump`): every event kind in each pre-dump
// sub-state of RUNNING (and in the incremental checkpoint that follows), then scenarios.
// Timeline of the fixture: started at 1 s, scale-down duration 60 s → pre-dump due at 31 s, idle
// deadline at 61 s.
import Testing

@testable import ZPCore

/// The pre-dump sub-states the fixture can reach through real events.
enum PreDumpSituation: String, CaseIterable, Sendable {
    /// Running, pre-dump deadline armed at 31 s.
    case armed
    /// `startPreDump` was ordered at 31 s; the process keeps running.
    case preDumping
    /// The idle deadline (61 s) passed during the pre-dump: the checkpoint waits for it.
    case waitingForPreDump
    /// The pre-dump finished; the next checkpoint is incremental.
    case preDumped
    /// The incremental checkpoint runs (CHECKPOINTING).
    case checkpointingOnPreDump
}

private let preDumpConfig = LC.Configuration(scaleDownDuration: .seconds(60), preDump: true)

/// A state machine with pre-dumps on, driven into `situation`.
func preDumpLifecycle(_ situation: PreDumpSituation) -> LC {
    var lc = LC(configuration: preDumpConfig)
    var steps: [LC.Event] = [.started(pid: Fixture.pid, now: at(1))]
    let preDump: LC.Event = .preDumpDeadlineReached(lastActivity: nil, now: at(31))
    let idle: LC.Event = .idleDeadlineReached(lastActivity: nil, now: at(61))
    switch situation {
    case .armed: break
    case .preDumping: steps += [preDump]
    case .waitingForPreDump: steps += [preDump, idle]
    case .preDumped: steps += [preDump, .preDumpFinished]
    case .checkpointingOnPreDump: steps += [preDump, .preDumpFinished, idle]
    }
    for e in steps { _ = lc.event(e) }
    precondition(situationText(lc) == expectedText(situation), "fixture \(situation): \(situationText(lc))")
    return lc
}

/// A compact text of everything pre-dump related, e.g. "RUNNING idle=61 pd=31".
func situationText(_ lc: LC) -> String {
    func s(_ i: ZPInstant?) -> String? { i.map { String($0.nanoseconds / 1_000_000_000) } }
    var parts = [lc.phase.name]
    if let idle = s(lc.idleDeadline) { parts.append("idle=\(idle)") }
    if let pd = s(lc.preDumpDeadline) { parts.append("pd=\(pd)") }
    if lc.preDumpInFlight { parts.append("inflight") }
    if lc.scaleDownWaitsForPreDump { parts.append("waits") }
    if lc.hasPreDumpImage { parts.append("image") }
    if !lc.preDumpEnabled { parts.append("pre-dump-off") }
    return parts.joined(separator: " ")
}

private func expectedText(_ situation: PreDumpSituation) -> String {
    switch situation {
    case .armed: return "RUNNING idle=61 pd=31"
    case .preDumping: return "RUNNING idle=61 inflight"
    case .waitingForPreDump: return "RUNNING inflight waits"
    case .preDumped: return "RUNNING idle=61 image"
    case .checkpointingOnPreDump: return "CHECKPOINTING"
    }
}

/// One representative event per kind, at the fixture's times.
private let sample: [LC.Event.Kind: LC.Event] = [
    .started: .started(pid: 300, now: at(61)),
    .idleDeadlineReached: .idleDeadlineReached(lastActivity: nil, now: at(61)),
    .activitySeen: .activitySeen(at: at(40)),
    .redirectUnavailable: .redirectUnavailable(reason: "no sk_lookup"),
    .checkpointFinished: .checkpointFinished(duration: .milliseconds(200)),
    .checkpointFailed: .checkpointFailed(reason: "dump failed", now: at(61)),
    .connectionArrived: .connectionArrived,
    .probeArrived: .probeArrived,
    .restoreFinished: .restoreFinished(pid: 200, duration: .milliseconds(90), now: at(61)),
    .restoreFailed: .restoreFailed(reason: "restore failed"),
    .coldStartFinished: .coldStartFinished(pid: 201, now: at(61)),
    .coldStartFailed: .coldStartFailed(reason: "cold start failed"),
    .execStarted: .execStarted(id: "e1"),
    .execEnded: .execEnded(id: "e1", now: at(61)),
    .killRequested: .killRequested(signal: 15),
    .processExited: .processExited(pid: Fixture.pid, status: 0),
    .deleteRequested: .deleteRequested,
    .preDumpDeadlineReached: .preDumpDeadlineReached(lastActivity: nil, now: at(31)),
    .preDumpFinished: .preDumpFinished,
    .preDumpFailed: .preDumpFailed(reason: "no mem_track"),
    .lazyRestoreFailed: .lazyRestoreFailed(reason: "lazy restore failed"),
    .groupWakeRequested: .groupWakeRequested,
]

struct PreDumpRow: CustomTestStringConvertible, Sendable {
    var situation: PreDumpSituation
    var kind: LC.Event.Kind
    var actions: [LC.Action]
    /// `situationText` afterwards; nil: the event is ignored and must change nothing.
    var next: String?
    var testDescription: String { "\(situation) + \(kind)" }
}

private func row(_ s: PreDumpSituation, _ kind: LC.Event.Kind, _ actions: [LC.Action], _ next: String) -> PreDumpRow {
    PreDumpRow(situation: s, kind: kind, actions: actions, next: next)
}

private func ignored(_ s: PreDumpSituation, _ kinds: [LC.Event.Kind]) -> [PreDumpRow] {
    kinds.map { PreDumpRow(situation: s, kind: $0, actions: [], next: nil) }
}

private let stopping = LC.Action.emitStatus(.stopping, duration: nil, reason: nil)
/// Completions of operations that are not in flight while running.
private let strayCompletions: [LC.Event.Kind] = [
    .started, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed, .coldStartFinished,
    .coldStartFailed, .execEnded, .deleteRequested, .lazyRestoreFailed,
]

private let preDumpTable: [PreDumpRow] =
    // armed: pre-dump due at 31, idle deadline 61
    [
        row(.armed, .preDumpDeadlineReached, [.startPreDump], "RUNNING idle=61 inflight"),
        // The pre-dump timer did not fire first: a plain checkpoint.
        row(.armed, .idleDeadlineReached, [.enableRedirect, .startCheckpoint], "CHECKPOINTING"),
        row(.armed, .activitySeen, [], "RUNNING idle=61 pd=31"),
        row(.armed, .redirectUnavailable, [.cancelIdleTimer], "RUNNING"),
        row(.armed, .connectionArrived, [.forwardConnection], "RUNNING idle=61 pd=31"),
        row(.armed, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING idle=61 pd=31"),
        row(.armed, .probeArrived, [.forwardConnection], "RUNNING idle=61 pd=31"),
        row(.armed, .execStarted, [.cancelIdleTimer, .startExec(id: "e1")], "RUNNING"),
        row(.armed, .killRequested, [.signalProcess(signal: 15)], "RUNNING idle=61 pd=31"),
        row(.armed, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], "STOPPED"),
    ]
    + ignored(.armed, strayCompletions + [.preDumpFinished, .preDumpFailed])
    // preDumping: the process runs and serves; nothing is held
    + [
        row(.preDumping, .idleDeadlineReached, [], "RUNNING inflight waits"),
        row(.preDumping, .activitySeen, [], "RUNNING idle=61 inflight"),
        row(.preDumping, .redirectUnavailable, [.cancelIdleTimer], "RUNNING inflight"),
        row(.preDumping, .connectionArrived, [.forwardConnection], "RUNNING idle=61 inflight"),
        row(.preDumping, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING idle=61 inflight"),
        row(.preDumping, .probeArrived, [.forwardConnection], "RUNNING idle=61 inflight"),
        row(.preDumping, .execStarted, [.cancelIdleTimer, .startExec(id: "e1")], "RUNNING inflight"),
        row(.preDumping, .killRequested, [.signalProcess(signal: 15)], "RUNNING idle=61 inflight"),
        row(.preDumping, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], "STOPPED"),
        row(.preDumping, .preDumpFinished, [], "RUNNING idle=61 image"),
        row(.preDumping, .preDumpFailed, [], "RUNNING idle=61 pre-dump-off"),
    ]
    + ignored(.preDumping, strayCompletions + [.preDumpDeadlineReached])
    // waitingForPreDump: the deadline passed; the checkpoint starts when the pre-dump ends
    + [
        row(.waitingForPreDump, .activitySeen, [], "RUNNING inflight waits"),
        row(.waitingForPreDump, .redirectUnavailable, [], "RUNNING inflight"),
        row(.waitingForPreDump, .connectionArrived, [.forwardConnection], "RUNNING inflight waits"),
        row(.waitingForPreDump, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING inflight waits"),
        row(.waitingForPreDump, .probeArrived, [.forwardConnection], "RUNNING inflight waits"),
        row(.waitingForPreDump, .execStarted, [.startExec(id: "e1")], "RUNNING inflight"),
        row(.waitingForPreDump, .killRequested, [.signalProcess(signal: 15)], "RUNNING inflight waits"),
        row(.waitingForPreDump, .processExited, [stopping, .reportExit(status: 0)], "STOPPED"),
        row(.waitingForPreDump, .preDumpFinished, [.enableRedirect, .startIncrementalCheckpoint], "CHECKPOINTING"),
        row(.waitingForPreDump, .preDumpFailed, [.enableRedirect, .startCheckpoint], "CHECKPOINTING pre-dump-off"),
    ]
    + ignored(.waitingForPreDump, strayCompletions + [.idleDeadlineReached, .preDumpDeadlineReached])
    // preDumped: image ready
    + [
        row(.preDumped, .idleDeadlineReached, [.enableRedirect, .startIncrementalCheckpoint], "CHECKPOINTING"),
        row(.preDumped, .activitySeen, [], "RUNNING idle=61 image"),
        row(.preDumped, .redirectUnavailable, [.cancelIdleTimer], "RUNNING image"),
        row(.preDumped, .connectionArrived, [.forwardConnection], "RUNNING idle=61 image"),
        row(.preDumped, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING idle=61 image"),
        row(.preDumped, .probeArrived, [.forwardConnection], "RUNNING idle=61 image"),
        row(.preDumped, .execStarted, [.cancelIdleTimer, .startExec(id: "e1")], "RUNNING image"),
        row(.preDumped, .killRequested, [.signalProcess(signal: 15)], "RUNNING idle=61 image"),
        row(.preDumped, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], "STOPPED"),
    ]
    + ignored(.preDumped, strayCompletions + [.preDumpDeadlineReached, .preDumpFinished, .preDumpFailed])
    // checkpointingOnPreDump: like any checkpoint; pre-dump events are stray
    + [
        row(.checkpointingOnPreDump, .redirectUnavailable, [], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .activitySeen, [], "CHECKPOINTING"),
        row(
            .checkpointingOnPreDump,
            .checkpointFinished,
            [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil)],
            "SCALED_DOWN"
        ),
        row(
            .checkpointingOnPreDump,
            .checkpointFailed,
            // One plain dump without the pre-dump parent before the checkpoint counts as failed.
            [.cleanupImages, .startCheckpoint],
            "CHECKPOINTING"
        ),
        row(.checkpointingOnPreDump, .groupWakeRequested, [.holdConnection], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .connectionArrived, [.holdConnection], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .probeArrived, [.answerProbe], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .execStarted, [.holdExec(id: "e1")], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .killRequested, [.deferSignal(signal: 15)], "CHECKPOINTING"),
        row(.checkpointingOnPreDump, .processExited, [.suppressExit], "CHECKPOINTING"),
    ]
    + ignored(
        .checkpointingOnPreDump,
        [
            .started, .idleDeadlineReached, .restoreFinished, .restoreFailed, .coldStartFinished, .coldStartFailed,
            .execEnded, .deleteRequested, .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed, .lazyRestoreFailed,
        ]
    )

@Suite("Lifecycle: pre-dump while idle")
struct LifecyclePreDumpTests {
    @Test func table_coversEverySituationAndEventExactlyOnce() {
        var seen: [String: Int] = [:]
        for r in preDumpTable { seen["\(r.situation)+\(r.kind)", default: 0] += 1 }
        for situation in PreDumpSituation.allCases {
            for kind in LC.Event.Kind.allCases {
                #expect(seen["\(situation)+\(kind)"] == 1, "pair \(situation) + \(kind) must have exactly one row")
            }
        }
        #expect(preDumpTable.count == PreDumpSituation.allCases.count * LC.Event.Kind.allCases.count)
        #expect(sample.count == LC.Event.Kind.allCases.count)
    }

    @Test(arguments: preDumpTable)
    func transition(_ r: PreDumpRow) throws {
        var lc = preDumpLifecycle(r.situation)
        let before = LifecycleSnapshot(lc)
        let event = try #require(sample[r.kind])
        let actions = lc.event(event)
        #expect(actions == r.actions, "\(r.situation) + \(event)")
        if let next = r.next {
            #expect(situationText(lc) == next, "\(r.situation) + \(event)")
        } else {
            #expect(LifecycleSnapshot(lc) == before, "\(r.situation) + \(event) must change nothing")
        }
    }

    // MARK: scenarios

    @Test func withoutTheAnnotation_noPreDumpIsEverDue() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(lc.preDumpDeadline == nil)
        #expect(!lc.preDumpEnabled)
        #expect(lc.event(.preDumpDeadlineReached(lastActivity: nil, now: at(31))) == [])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [.enableRedirect, .startCheckpoint])
    }

    @Test func start_armsThePreDumpTimerHalfTheWindowBeforeTheIdleTimer() {
        var lc = LC(configuration: preDumpConfig)
        #expect(
            lc.event(.started(pid: Fixture.pid, now: at(1))) == [
                .emitStatus(.running, duration: nil, reason: nil), .armIdleTimer(deadline: at(61)),
                .armPreDumpTimer(deadline: at(31)),
            ]
        )
        // An exec cancels both timers with one order; its end arms both again.
        #expect(lc.event(.execStarted(id: "x")) == [.cancelIdleTimer, .startExec(id: "x")])
        #expect(lc.preDumpDeadline == nil)
        #expect(
            lc.event(.execEnded(id: "x", now: at(10))) == [
                .armIdleTimer(deadline: at(70)), .armPreDumpTimer(deadline: at(40)),
            ]
        )
    }

    @Test func checkpointingOff_orScaleDownOff_meansNoPreDump() {
        var kill = LC(configuration: .init(scaleDownDuration: .seconds(60), checkpointingEnabled: false, preDump: true))
        _ = kill.event(.started(pid: 1, now: at(1)))
        #expect(kill.idleDeadline == at(61))
        #expect(kill.preDumpDeadline == nil)
        var never = LC(configuration: .init(scaleDownDuration: .zero, preDump: true))
        _ = never.event(.started(pid: 1, now: at(1)))
        #expect(never.preDumpDeadline == nil)
    }

    @Test func activityBeforeThePreDumpDeadline_postponesItToHalfTheWindowAfterTheActivity() {
        var lc = preDumpLifecycle(.armed)
        #expect(
            lc.event(.preDumpDeadlineReached(lastActivity: at(20), now: at(31))) == [.armPreDumpTimer(deadline: at(50))]
        )
        #expect(situationText(lc) == "RUNNING idle=61 pd=50")
        // A stale firing of the old deadline changes nothing.
        #expect(lc.event(.preDumpDeadlineReached(lastActivity: at(20), now: at(45))) == [])
        #expect(lc.preDumpDeadline == at(50))
        #expect(lc.event(.preDumpDeadlineReached(lastActivity: at(20), now: at(50))) == [.startPreDump])
        #expect(lc.preDumpInFlight)
        // Activity so late that half the window ends at the idle deadline: the idle deadline
        // decides; it re-arms and, idle for half the window by then, pre-dumps at once.
        var late = preDumpLifecycle(.armed)
        #expect(late.event(.preDumpDeadlineReached(lastActivity: at(31), now: at(31))) == [])
        #expect(situationText(late) == "RUNNING idle=61")
        #expect(
            late.event(.idleDeadlineReached(lastActivity: at(31), now: at(61))) == [
                .armIdleTimer(deadline: at(91)), .startPreDump,
            ]
        )
        #expect(situationText(late) == "RUNNING idle=91 inflight")
    }

    @Test func openConnections_postponeThePreDumpWhenTheyCountAsActivity() {
        var lc = preDumpLifecycle(.armed)
        #expect(lc.event(.preDumpDeadlineReached(lastActivity: nil, openConnections: 2, now: at(31))) == [])
        #expect(situationText(lc) == "RUNNING idle=61")
        var ignoring = LC(
            configuration: .init(scaleDownDuration: .seconds(60), openConnectionsCountAsActivity: false, preDump: true)
        )
        _ = ignoring.event(.started(pid: 1, now: at(1)))
        #expect(
            ignoring.event(.preDumpDeadlineReached(lastActivity: nil, openConnections: 2, now: at(31))) == [
                .startPreDump
            ]
        )
    }

    @Test func rearmWhenHalfTheWindowHasAlreadyPassed_startsThePreDumpAtOnce() {
        var lc = preDumpLifecycle(.armed)
        // The pre-dump timer never fired; the idle deadline finds activity at 20 s: the window now
        // ends at 80 s, and after 41 s idle the pre-dump (due at 50 s) is overdue.
        let actions = lc.event(.idleDeadlineReached(lastActivity: at(20), now: at(61)))
        #expect(actions == [.armIdleTimer(deadline: at(80)), .startPreDump])
        #expect(situationText(lc) == "RUNNING idle=80 inflight")
    }

    @Test func activityAfterThePreDump_makesItStale_andAFreshOneIsTakenLater() {
        var lc = preDumpLifecycle(.preDumped)  // taken at 31
        // Activity at 40 found at the idle deadline: re-arm to 100, pre-dump again at 70.
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(40), now: at(61))) == [
                .armIdleTimer(deadline: at(100)), .armPreDumpTimer(deadline: at(70)),
            ]
        )
        #expect(situationText(lc) == "RUNNING idle=100 pd=70 image")
        #expect(lc.event(.preDumpDeadlineReached(lastActivity: at(40), now: at(70))) == [.startPreDump])
        #expect(situationText(lc) == "RUNNING idle=100 inflight")
        #expect(lc.event(.preDumpFinished) == [])
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(40), now: at(100))) == [
                .enableRedirect, .startIncrementalCheckpoint,
            ]
        )
    }

    @Test func openConnectionsAtTheIdleDeadline_keepAFreshPreDump() {
        var lc = preDumpLifecycle(.preDumped)
        // No new activity: the image stays fresh, no second pre-dump is due.
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, openConnections: 1, now: at(61))) == [
                .armIdleTimer(deadline: at(121))
            ]
        )
        #expect(situationText(lc) == "RUNNING idle=121 image")
    }

    @Test func fullCycle_preDump_incrementalCheckpoint_restore_thenAFreshPreDumpDeadline() {
        var lc = preDumpLifecycle(.checkpointingOnPreDump)
        _ = lc.event(.processExited(pid: Fixture.pid, status: 137))
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(50))) == [
                .emitStatus(.scaledDown, duration: .milliseconds(50), reason: nil)
            ]
        )
        #expect(lc.hasCheckpointImage)
        #expect(lc.event(.connectionArrived) == [.holdConnection, .startRestore])
        #expect(
            lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(100))) == [
                .releaseHeldConnections(count: 1), .disableRedirect, .cleanupImages,
                .emitStatus(.running, duration: .milliseconds(90), reason: nil), .armIdleTimer(deadline: at(160)),
                .armPreDumpTimer(deadline: at(130)),
            ]
        )
        #expect(situationText(lc) == "RUNNING idle=160 pd=130")
    }

    @Test func preDumpFailure_turnsPreDumpsOffForGood_butNotCheckpoints() {
        var lc = preDumpLifecycle(.preDumping)
        #expect(lc.event(.preDumpFailed(reason: "CRIU reports no mem_track")) == [])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [.enableRedirect, .startCheckpoint])
        _ = lc.event(.checkpointFinished(duration: .milliseconds(50)))
        _ = lc.event(.connectionArrived)
        _ = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(100)))
        #expect(situationText(lc) == "RUNNING idle=160 pre-dump-off")
    }

    @Test func execDuringPreDump_runsAtOnce_pinsTheContainer_andKeepsTheImageForLater() {
        var lc = preDumpLifecycle(.waitingForPreDump)
        #expect(lc.event(.execStarted(id: "x")) == [.startExec(id: "x")])
        #expect(lc.event(.preDumpFinished) == [])
        #expect(situationText(lc) == "RUNNING image")
        #expect(lc.event(.execEnded(id: "x", now: at(70))) == [.armIdleTimer(deadline: at(130))])
        #expect(situationText(lc) == "RUNNING idle=130 image")
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(130))) == [
                .enableRedirect, .startIncrementalCheckpoint,
            ]
        )
    }

    @Test func failedIncrementalCheckpoint_dropsThePreDumpWithTheImages() {
        var lc = preDumpLifecycle(.checkpointingOnPreDump)
        // The first failure drops the pre-dump with the images and dumps once more without it.
        #expect(lc.event(.checkpointFailed(reason: "dump failed", now: at(62))) == [.cleanupImages, .startCheckpoint])
        #expect(lc.phase == .checkpointing && lc.checkpointingEnabled)
        // The plain dump fails too: now the checkpoint counts as failed.
        let actions = lc.event(.checkpointFailed(reason: "dump failed again", now: at(63)))
        #expect(actions.contains(.cleanupImages))
        #expect(actions.contains(.emitStatus(.checkpointFailed, duration: nil, reason: "dump failed again")))
        #expect(lc.phase == .running && !lc.checkpointingEnabled)
        #expect(!lc.hasPreDumpImage && lc.preDumpDeadline == nil)
    }
}
