// Dry run (`zeropod.ctrox.dev/dry-run`, decision 0031): every event kind in the two dry-run
// sub-states of RUNNING, then scenarios. Timeline of the fixture: started at 1 s, scale-down
// duration 60 s, traffic poll every 1 s → idle deadline at 61 s; virtually scaled down at 61 s,
// next poll at 62 s.
import Testing

@testable import ZPCore

/// The dry-run sub-states the fixture reaches through real events.
enum DryRunSituation: String, CaseIterable, Sendable {
    /// Running, idle timer armed for 61 s.
    case armed
    /// The idle deadline passed at 61 s: `wouldScaleDown` was reported, the poll is armed for 62 s.
    case virtuallyScaledDown
}

private let dryRunConfig = LC.Configuration(scaleDownDuration: .seconds(60), dryRun: true)

/// A dry-run state machine driven into `situation`.
func dryRunLifecycle(_ situation: DryRunSituation, configuration: LC.Configuration = dryRunConfig) -> LC {
    var lc = LC(configuration: configuration)
    var steps: [LC.Event] = [.started(pid: Fixture.pid, now: at(1))]
    switch situation {
    case .armed: break
    case .virtuallyScaledDown: steps.append(.idleDeadlineReached(lastActivity: nil, now: at(61)))
    }
    for e in steps { _ = lc.event(e) }
    precondition(dryRunText(lc) == dryRunExpected(situation), "fixture \(situation): \(dryRunText(lc))")
    return lc
}

/// A compact text of the dry-run view, e.g. "RUNNING idle=62 down".
func dryRunText(_ lc: LC) -> String {
    var parts = [lc.phase.name]
    if let idle = lc.idleDeadline {
        let ms = idle.nanoseconds / 1_000_000
        parts.append(ms % 1000 == 0 ? "idle=\(ms / 1000)" : "idle=\(ms)ms")
    }
    if lc.dryRunScaledDown { parts.append("down") }
    if lc.preDumpDeadline != nil || lc.preDumpInFlight { parts.append("pre-dump") }
    return parts.joined(separator: " ")
}

private func dryRunExpected(_ situation: DryRunSituation) -> String {
    switch situation {
    case .armed: return "RUNNING idle=61"
    case .virtuallyScaledDown: return "RUNNING idle=62 down"
    }
}

/// One representative event per kind. The timer fires at 62 s: past the armed deadline of both
/// situations (61 s, 62 s), with no activity since.
private let sample: [LC.Event.Kind: LC.Event] = [
    .started: .started(pid: 300, now: at(62)),
    .idleDeadlineReached: .idleDeadlineReached(lastActivity: nil, now: at(62)),
    .activitySeen: .activitySeen(at: at(40)),
    .redirectUnavailable: .redirectUnavailable(reason: "no sk_lookup"),
    .checkpointFinished: .checkpointFinished(duration: .milliseconds(200)),
    .checkpointFailed: .checkpointFailed(reason: "dump failed", now: at(62)),
    .connectionArrived: .connectionArrived,
    .probeArrived: .probeArrived,
    .restoreFinished: .restoreFinished(pid: 200, duration: .milliseconds(90), now: at(62)),
    .restoreFailed: .restoreFailed(reason: "restore failed"),
    .coldStartFinished: .coldStartFinished(pid: 201, now: at(62)),
    .coldStartFailed: .coldStartFailed(reason: "cold start failed"),
    .execStarted: .execStarted(id: "e1"),
    .execEnded: .execEnded(id: "e1", now: at(62)),
    .killRequested: .killRequested(signal: 15),
    .processExited: .processExited(pid: Fixture.pid, status: 0),
    .deleteRequested: .deleteRequested,
    .preDumpDeadlineReached: .preDumpDeadlineReached(lastActivity: nil, now: at(31)),
    .preDumpFinished: .preDumpFinished,
    .preDumpFailed: .preDumpFailed(reason: "no mem_track"),
    .lazyRestoreFailed: .lazyRestoreFailed(reason: "lazy restore failed"),
    .groupWakeRequested: .groupWakeRequested,
]

struct DryRunRow: CustomTestStringConvertible, Sendable {
    var situation: DryRunSituation
    var kind: LC.Event.Kind
    var actions: [LC.Action]
    /// `dryRunText` afterwards; nil: the event is ignored and must change nothing.
    var next: String?
    var testDescription: String { "\(situation) + \(kind)" }
}

private func row(_ s: DryRunSituation, _ kind: LC.Event.Kind, _ actions: [LC.Action], _ next: String) -> DryRunRow {
    DryRunRow(situation: s, kind: kind, actions: actions, next: next)
}

private func ignored(_ s: DryRunSituation, _ kinds: [LC.Event.Kind]) -> [DryRunRow] {
    kinds.map { DryRunRow(situation: s, kind: $0, actions: [], next: nil) }
}

private let stopping = LC.Action.emitStatus(.stopping, duration: nil, reason: nil)
/// Completions of operations that never run in a dry run, and pre-dump facts (pre-dumps are off).
private let neverInADryRun: [LC.Event.Kind] = [
    .started, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed, .coldStartFinished,
    .coldStartFailed, .execEnded, .deleteRequested, .lazyRestoreFailed, .preDumpDeadlineReached, .preDumpFinished,
    .preDumpFailed,
]

private let dryRunTable: [DryRunRow] =
    // armed: idle deadline 61
    [
        // The deadline passed idle: reported, not carried out; the poll for traffic is armed.
        row(
            .armed,
            .idleDeadlineReached,
            [.emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(63))],
            "RUNNING idle=63 down"
        ),
        row(.armed, .activitySeen, [], "RUNNING idle=61"),
        row(.armed, .redirectUnavailable, [.cancelIdleTimer], "RUNNING"),
        row(.armed, .connectionArrived, [.forwardConnection], "RUNNING idle=61"),
        row(.armed, .probeArrived, [.forwardConnection], "RUNNING idle=61"),
        row(.armed, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING idle=61"),
        row(.armed, .execStarted, [.cancelIdleTimer, .startExec(id: "e1")], "RUNNING"),
        row(.armed, .killRequested, [.signalProcess(signal: 15)], "RUNNING idle=61"),
        row(.armed, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], "STOPPED"),
    ]
    + ignored(.armed, neverInADryRun)
    // virtuallyScaledDown since 61, poll at 62: the process runs and serves
    + [
        // No traffic since 61: poll again in a second.
        row(.virtuallyScaledDown, .idleDeadlineReached, [.armIdleTimer(deadline: at(63))], "RUNNING idle=63 down"),
        // Only recorded (and older than the virtual scale-down anyway): the next poll decides.
        row(.virtuallyScaledDown, .activitySeen, [], "RUNNING idle=62 down"),
        // A real scaled-down container would wake at once: reported as a restore.
        row(
            .virtuallyScaledDown,
            .redirectUnavailable,
            [.cancelIdleTimer, .emitDryRun(.wouldRestore(.redirectLost))],
            "RUNNING"
        ),
        // The redirect never steers in a dry run: the activator's hooks are not how traffic is
        // seen; a connection it reports is forwarded to the running app and counts only through
        // the activity stamps.
        row(.virtuallyScaledDown, .connectionArrived, [.forwardConnection], "RUNNING idle=62 down"),
        row(.virtuallyScaledDown, .probeArrived, [.forwardConnection], "RUNNING idle=62 down"),
        row(.virtuallyScaledDown, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], "RUNNING idle=62 down"),
        row(
            .virtuallyScaledDown,
            .execStarted,
            [.cancelIdleTimer, .emitDryRun(.wouldRestore(.exec(id: "e1"))), .startExec(id: "e1")],
            "RUNNING"
        ),
        row(.virtuallyScaledDown, .killRequested, [.signalProcess(signal: 15)], "RUNNING idle=62 down"),
        row(.virtuallyScaledDown, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], "STOPPED"),
    ]
    + ignored(.virtuallyScaledDown, neverInADryRun)

/// Orders a dry run must never give: everything that touches the process, its memory or the
/// redirect.
private func touchesTheContainer(_ action: LC.Action) -> Bool {
    switch action {
    case .enableRedirect, .disableRedirect, .startCheckpoint, .startIncrementalCheckpoint, .startPreDump,
        .startScaleDownKill, .startRestore, .startFullRestore, .startColdStart, .armPreDumpTimer, .holdConnection,
        .holdExec, .answerProbe, .cleanupImages, .wakeGroup:
        return true
    case .armIdleTimer, .cancelIdleTimer, .forwardConnection, .refuseConnection, .releaseHeldConnections,
        .failHeldConnections, .answerGroupWake, .startExec, .startHeldExecs, .failHeldExecs, .rejectExec,
        .deferSignal, .emitStatus, .suppressExit, .reportExit, .signalProcess, .cleanupAll, .emitDryRun:
        return false
    }
}

@Suite("Lifecycle: dry run")
struct LifecycleDryRunTests {
    @Test func table_coversEverySituationAndEventExactlyOnce() {
        var seen: [String: Int] = [:]
        for r in dryRunTable { seen["\(r.situation)+\(r.kind)", default: 0] += 1 }
        for situation in DryRunSituation.allCases {
            for kind in LC.Event.Kind.allCases {
                #expect(seen["\(situation)+\(kind)"] == 1, "pair \(situation) + \(kind) must have exactly one row")
            }
        }
        #expect(dryRunTable.count == DryRunSituation.allCases.count * LC.Event.Kind.allCases.count)
        #expect(sample.count == LC.Event.Kind.allCases.count)
    }

    @Test(arguments: dryRunTable)
    func transition(_ r: DryRunRow) throws {
        var lc = dryRunLifecycle(r.situation)
        let before = LifecycleSnapshot(lc)
        let event = try #require(sample[r.kind])
        let actions = lc.event(event)
        #expect(actions == r.actions, "\(r.situation) + \(event)")
        #expect(!actions.contains(where: touchesTheContainer), "\(r.situation) + \(event): \(actions)")
        if let next = r.next {
            #expect(dryRunText(lc) == next, "\(r.situation) + \(event)")
        } else {
            #expect(LifecycleSnapshot(lc) == before, "\(r.situation) + \(event) must change nothing")
        }
    }

    /// The driver's split: a dry-run report is an effect, never the caller's answer.
    @Test(arguments: dryRunTable)
    func step_keepsTheReportAmongTheEffects(_ r: DryRunRow) throws {
        var lc = dryRunLifecycle(r.situation)
        let event = try #require(sample[r.kind])
        let step = lc.step(event)
        #expect(step.effects.map(\.action) == r.actions.filter { $0 != step.answer.action }, "\(r.testDescription)")
        let reports = r.actions.filter { if case .emitDryRun = $0 { true } else { false } }
        #expect(step.effects.filter { if case .emitDryRun = $0 { true } else { false } }.map(\.action) == reports)
    }

    // MARK: scenarios

    @Test func cycle_wouldScaleDown_pollsUntilTraffic_wouldRestore_thenStartsOver() {
        var lc = dryRunLifecycle(.armed)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(62)),
            ]
        )
        #expect(lc.phase == .running && lc.dryRunScaledDown && lc.pid == Fixture.pid && !lc.redirectEnabled)
        // Quiet polls re-arm a second ahead.
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(62))) == [.armIdleTimer(deadline: at(63))])
        // A poll that fires late, before its deadline, is a stale timer: nothing.
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(62), now: at(62))) == [])
        // Traffic at 62 s, seen by the poll at 63 s: a restore would have happened; the idle
        // window starts over from the poll, as after a real restore.
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(62), now: at(63))) == [
                .emitDryRun(.wouldRestore(.traffic(at: at(62)))), .armIdleTimer(deadline: at(123)),
            ]
        )
        #expect(!lc.dryRunScaledDown)
        // Idle for the whole window again: the next virtual scale-down.
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(62), now: at(123))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(124)),
            ]
        )
        #expect(lc.dryRunScaledDown && lc.phase == .running && lc.pid == Fixture.pid)
    }

    @Test func trafficBeforeTheVirtualScaleDown_isNotARestore() {
        var lc = dryRunLifecycle(.armed)
        // Activity at 30 s: the deadline moves to 90 s, exactly as without a dry run.
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(30), now: at(61))) == [.armIdleTimer(deadline: at(90))])
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: at(30), now: at(90))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(91)),
            ]
        )
        // The same old stamp at every poll: still virtually down.
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(30), now: at(91))) == [.armIdleTimer(deadline: at(92))])
        #expect(lc.event(.activitySeen(at: at(89))) == [])
        #expect(lc.event(.idleDeadlineReached(lastActivity: at(89), now: at(92))) == [.armIdleTimer(deadline: at(93))])
        #expect(lc.dryRunScaledDown)
    }

    @Test func activitySeen_afterTheVirtualScaleDown_isReportedByTheNextPoll() {
        var lc = dryRunLifecycle(.virtuallyScaledDown)
        let traffic = at(61).advanced(by: .milliseconds(500))
        #expect(lc.event(.activitySeen(at: traffic)) == [])
        #expect(lc.dryRunScaledDown)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(62))) == [
                .emitDryRun(.wouldRestore(.traffic(at: traffic))), .armIdleTimer(deadline: at(122)),
            ]
        )
    }

    @Test func openConnectionsAtTheDeadline_postponeTheVirtualScaleDown_asTheyPostponeARealOne() {
        var lc = dryRunLifecycle(.armed)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, openConnections: 1, now: at(61))) == [
                .armIdleTimer(deadline: at(121))
            ]
        )
        #expect(!lc.dryRunScaledDown)
        // While virtually down, an open connection alone is not traffic (it was there before, or
        // its opening stamped the activity, which the poll sees).
        var down = dryRunLifecycle(.virtuallyScaledDown)
        #expect(
            down.event(.idleDeadlineReached(lastActivity: nil, openConnections: 1, now: at(62))) == [
                .armIdleTimer(deadline: at(63))
            ]
        )
    }

    @Test func exec_whileVirtuallyDown_isAWouldRestore_andPinsTheContainerUntilItEnds() {
        var lc = dryRunLifecycle(.virtuallyScaledDown)
        #expect(
            lc.event(.execStarted(id: "sh")) == [
                .cancelIdleTimer, .emitDryRun(.wouldRestore(.exec(id: "sh"))), .startExec(id: "sh"),
            ]
        )
        #expect(!lc.dryRunScaledDown && lc.idleDeadline == nil)
        // A second exec while the first runs is no second restore.
        #expect(lc.event(.execStarted(id: "sh2")) == [.startExec(id: "sh2")])
        #expect(lc.event(.execEnded(id: "sh", now: at(70))) == [])
        #expect(lc.event(.execEnded(id: "sh2", now: at(80))) == [.armIdleTimer(deadline: at(140))])
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(140))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(141)),
            ]
        )
    }

    @Test func wakeGroupMember_inADryRun_neverWakesTheGroup() {
        let config = LC.Configuration(scaleDownDuration: .seconds(60), wakesGroup: true, dryRun: true)
        var lc = dryRunLifecycle(.virtuallyScaledDown, configuration: config)
        let actions = lc.event(.execStarted(id: "x"))
        #expect(!actions.contains(.wakeGroup), "\(actions)")
        #expect(actions.contains(.emitDryRun(.wouldRestore(.exec(id: "x")))))
    }

    @Test func preDumpAndKillSettings_areSimulated_neverCarriedOut() {
        // pre-dump: no pre-dump timer, no pre-dump; the deadline reports as usual.
        let preDump = LC.Configuration(scaleDownDuration: .seconds(60), preDump: true, dryRun: true)
        var lc = LC(configuration: preDump)
        #expect(
            lc.event(.started(pid: 7, now: at(1))) == [
                .emitStatus(.running, duration: nil, reason: nil), .armIdleTimer(deadline: at(61)),
            ]
        )
        #expect(!lc.preDumpEnabled && lc.preDumpDeadline == nil)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(62)),
            ]
        )
        // disable-checkpointing: a kill would have scaled it down; reported the same way.
        let kill = LC.Configuration(scaleDownDuration: .seconds(60), checkpointingEnabled: false, dryRun: true)
        var killed = LC(configuration: kill)
        _ = killed.event(.started(pid: 7, now: at(1)))
        #expect(
            killed.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(62)),
            ]
        )
        #expect(killed.phase == .running)
    }

    @Test func pollInterval_isConfigurable_andNonPositiveMeansOneSecond() {
        let fast = LC.Configuration(
            scaleDownDuration: .seconds(60),
            dryRun: true,
            dryRunPollInterval: .milliseconds(250)
        )
        var lc = dryRunLifecycle(.armed, configuration: fast)
        #expect(
            lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(61).advanced(by: .milliseconds(250))),
            ]
        )
        #expect(dryRunText(lc) == "RUNNING idle=61250ms down")
        let zero = LC.Configuration(scaleDownDuration: .seconds(60), dryRun: true, dryRunPollInterval: .zero)
        var slow = dryRunLifecycle(.armed, configuration: zero)
        #expect(
            slow.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [
                .emitDryRun(.wouldScaleDown), .armIdleTimer(deadline: at(62)),
            ]
        )
    }

    @Test func scaleDownDisabled_meansNoDryRunReports() {
        var lc = LC(configuration: .init(scaleDownDuration: .zero, dryRun: true))
        #expect(lc.event(.started(pid: 7, now: at(1))) == [.emitStatus(.running, duration: nil, reason: nil)])
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [])
    }

    @Test func withoutTheAnnotation_theSameDeadlineScalesDownForReal() {
        var lc = Fixture.lifecycle(in: .running)
        #expect(!lc.configuration.dryRun)
        #expect(lc.event(.idleDeadlineReached(lastActivity: nil, now: at(61))) == [.enableRedirect, .startCheckpoint])
        #expect(!lc.dryRunScaledDown)
    }
}
