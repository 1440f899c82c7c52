// Every (phase, event) pair of ContainerLifecycle: the exact actions and the next phase.
// A pair marked `ignored` must also leave every observable property unchanged.
import Testing

@testable import ZPCore

private let T = Fixture.deadline
private let next = at(121)  // T + 60 s: the deadline armed by a transition at T

/// One representative event per kind (scenario tests cover the other values).
private let sample: [LC.Event.Kind: LC.Event] = [
    .started: .started(pid: 300, now: T),
    .idleDeadlineReached: .idleDeadlineReached(lastActivity: nil, now: T),
    .activitySeen: .activitySeen(at: T),
    .redirectUnavailable: .redirectUnavailable(reason: "no sk_lookup"),
    .checkpointFinished: .checkpointFinished(duration: .milliseconds(200)),
    .checkpointFailed: .checkpointFailed(reason: "dump failed", now: T),
    .connectionArrived: .connectionArrived,
    .probeArrived: .probeArrived,
    .restoreFinished: .restoreFinished(pid: 200, duration: .milliseconds(90), now: T),
    .restoreFailed: .restoreFailed(reason: "restore failed"),
    .coldStartFinished: .coldStartFinished(pid: 201, now: T),
    .coldStartFailed: .coldStartFailed(reason: "cold start failed"),
    .execStarted: .execStarted(id: "e1"),
    .execEnded: .execEnded(id: "e1", now: T),
    .killRequested: .killRequested(signal: 15),
    .processExited: .processExited(pid: Fixture.pid, status: 0),
    .deleteRequested: .deleteRequested,
    .preDumpDeadlineReached: .preDumpDeadlineReached(lastActivity: nil, now: T),
    .preDumpFinished: .preDumpFinished,
    .preDumpFailed: .preDumpFailed(reason: "no mem_track"),
    .lazyRestoreFailed: .lazyRestoreFailed(reason: "lazy restore failed"),
    .groupWakeRequested: .groupWakeRequested,
]

struct Row: CustomTestStringConvertible, Sendable {
    var phase: LC.Phase
    var kind: LC.Event.Kind
    var actions: [LC.Action]
    var next: LC.Phase
    /// The event must change nothing observable.
    var ignored: Bool
    var testDescription: String { "\(phase) + \(kind)" }
}

private func row(_ phase: LC.Phase, _ kind: LC.Event.Kind, _ actions: [LC.Action], _ next: LC.Phase) -> Row {
    Row(phase: phase, kind: kind, actions: actions, next: next, ignored: false)
}

/// Rows for kinds that the phase ignores: no action, nothing changes.
private func ignored(_ phase: LC.Phase, _ kinds: [LC.Event.Kind]) -> [Row] {
    kinds.map { Row(phase: phase, kind: $0, actions: [], next: phase, ignored: true) }
}

private let stopping = LC.Action.emitStatus(.stopping, duration: nil, reason: nil)

private let table: [Row] =
    // created
    [
        row(
            .created,
            .started,
            [.emitStatus(.running, duration: nil, reason: nil), .armIdleTimer(deadline: next)],
            .running
        ),
        row(.created, .activitySeen, [], .created),
        row(.created, .redirectUnavailable, [], .created),
        row(.created, .connectionArrived, [.refuseConnection], .created),
        row(.created, .probeArrived, [.refuseConnection], .created),
        row(.created, .execStarted, [.rejectExec(id: "e1")], .created),
        row(.created, .killRequested, [.signalProcess(signal: 15)], .created),
        row(.created, .processExited, [stopping, .reportExit(status: 0)], .stopped),
        row(.created, .deleteRequested, [.cleanupAll], .stopped),
        row(.created, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], .created),
    ]
    + ignored(
        .created,
        [
            .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed,
            .coldStartFinished, .coldStartFailed, .execEnded,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // running (pid 100, deadline T)
    + [
        row(.running, .idleDeadlineReached, [.enableRedirect, .startCheckpoint], .checkpointing),
        row(.running, .activitySeen, [], .running),
        row(.running, .redirectUnavailable, [.cancelIdleTimer], .running),
        row(.running, .connectionArrived, [.forwardConnection], .running),
        row(.running, .probeArrived, [.forwardConnection], .running),
        row(.running, .execStarted, [.cancelIdleTimer, .startExec(id: "e1")], .running),
        row(.running, .killRequested, [.signalProcess(signal: 15)], .running),
        row(.running, .processExited, [.cancelIdleTimer, stopping, .reportExit(status: 0)], .stopped),
        row(.running, .groupWakeRequested, [.answerGroupWake(.notScaledDown)], .running),
    ]
    + ignored(
        .running,
        [
            .started, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed, .coldStartFinished,
            .coldStartFailed, .execEnded, .deleteRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // checkpointing (pid 100)
    + [
        row(.checkpointing, .redirectUnavailable, [], .checkpointing),
        row(.checkpointing, .activitySeen, [], .checkpointing),
        row(
            .checkpointing,
            .checkpointFinished,
            [.emitStatus(.scaledDown, duration: .milliseconds(200), reason: nil)],
            .scaledDown
        ),
        row(
            .checkpointing,
            .checkpointFailed,
            [
                .disableRedirect, .cleanupImages, .emitStatus(.checkpointFailed, duration: nil, reason: "dump failed"),
                .armIdleTimer(deadline: next),
            ],
            .running
        ),
        row(.checkpointing, .connectionArrived, [.holdConnection], .checkpointing),
        row(.checkpointing, .probeArrived, [.answerProbe], .checkpointing),
        row(.checkpointing, .execStarted, [.holdExec(id: "e1")], .checkpointing),
        row(.checkpointing, .killRequested, [.deferSignal(signal: 15)], .checkpointing),
        row(.checkpointing, .processExited, [.suppressExit], .checkpointing),
        row(.checkpointing, .groupWakeRequested, [.holdConnection], .checkpointing),
    ]
    + ignored(
        .checkpointing,
        [
            .started, .idleDeadlineReached, .restoreFinished, .restoreFailed, .coldStartFinished, .coldStartFailed,
            .execEnded, .deleteRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // scalingDownByKill (pid 100)
    + [
        row(.scalingDownByKill, .redirectUnavailable, [], .scalingDownByKill),
        row(.scalingDownByKill, .activitySeen, [], .scalingDownByKill),
        row(.scalingDownByKill, .connectionArrived, [.holdConnection], .scalingDownByKill),
        row(.scalingDownByKill, .probeArrived, [.answerProbe], .scalingDownByKill),
        row(.scalingDownByKill, .execStarted, [.holdExec(id: "e1")], .scalingDownByKill),
        row(.scalingDownByKill, .killRequested, [.deferSignal(signal: 15)], .scalingDownByKill),
        row(
            .scalingDownByKill,
            .processExited,
            [.suppressExit, .emitStatus(.scaledDown, duration: nil, reason: nil)],
            .scaledDown
        ),
        row(.scalingDownByKill, .groupWakeRequested, [.holdConnection], .scalingDownByKill),
    ]
    + ignored(
        .scalingDownByKill,
        [
            .started, .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed,
            .coldStartFinished, .coldStartFailed, .execEnded, .deleteRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // scaledDown (checkpoint image)
    + [
        row(.scaledDown, .redirectUnavailable, [.startRestore], .restoring),
        row(.scaledDown, .activitySeen, [], .scaledDown),
        row(.scaledDown, .connectionArrived, [.holdConnection, .startRestore], .restoring),
        row(.scaledDown, .probeArrived, [.answerProbe], .scaledDown),
        row(.scaledDown, .execStarted, [.holdExec(id: "e1"), .startRestore], .restoring),
        row(
            .scaledDown,
            .killRequested,
            [.disableRedirect, .cleanupImages, stopping, .reportExit(status: 0)],
            .stopped
        ),
        row(.scaledDown, .processExited, [.suppressExit], .scaledDown),
        row(
            .scaledDown,
            .deleteRequested,
            [.disableRedirect, .cleanupImages, stopping, .reportExit(status: 0), .cleanupAll],
            .stopped
        ),
        row(.scaledDown, .groupWakeRequested, [.holdConnection, .startRestore], .restoring),
    ]
    + ignored(
        .scaledDown,
        [
            .started, .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed,
            .coldStartFinished, .coldStartFailed, .execEnded,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // restoring (one held connection)
    + [
        row(.restoring, .redirectUnavailable, [], .restoring),
        row(.restoring, .activitySeen, [], .restoring),
        row(.restoring, .connectionArrived, [.holdConnection], .restoring),
        row(.restoring, .probeArrived, [.answerProbe], .restoring),
        row(
            .restoring,
            .restoreFinished,
            [
                .releaseHeldConnections(count: 1), .disableRedirect, .cleanupImages,
                .emitStatus(.running, duration: .milliseconds(90), reason: nil), .armIdleTimer(deadline: next),
            ],
            .running
        ),
        row(
            .restoring,
            .restoreFailed,
            [.cleanupImages, .emitStatus(.restoreFailed, duration: nil, reason: "restore failed"), .startColdStart],
            .coldStarting
        ),
        row(.restoring, .execStarted, [.holdExec(id: "e1")], .restoring),
        row(.restoring, .killRequested, [.deferSignal(signal: 15)], .restoring),
        row(.restoring, .processExited, [.suppressExit], .restoring),
        row(.restoring, .groupWakeRequested, [.answerGroupWake(.alreadyWaking)], .restoring),
        row(.restoring, .lazyRestoreFailed, [.startFullRestore], .restoring),
    ]
    + ignored(
        .restoring,
        [
            .started, .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .coldStartFinished,
            .coldStartFailed, .execEnded, .deleteRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
        ]
    )
    // coldStarting (one held connection)
    + [
        row(.coldStarting, .redirectUnavailable, [], .coldStarting),
        row(.coldStarting, .activitySeen, [], .coldStarting),
        row(.coldStarting, .connectionArrived, [.holdConnection], .coldStarting),
        row(.coldStarting, .probeArrived, [.answerProbe], .coldStarting),
        row(
            .coldStarting,
            .coldStartFinished,
            [
                .releaseHeldConnections(count: 1), .disableRedirect, .emitStatus(.running, duration: nil, reason: nil),
                .armIdleTimer(deadline: next),
            ],
            .running
        ),
        row(
            .coldStarting,
            .coldStartFailed,
            [
                .failHeldConnections(count: 1), .disableRedirect,
                .emitStatus(.restoreFailed, duration: nil, reason: "cold start failed"), stopping,
                .reportExit(status: 1),
            ],
            .stopped
        ),
        row(.coldStarting, .execStarted, [.holdExec(id: "e1")], .coldStarting),
        row(.coldStarting, .killRequested, [.deferSignal(signal: 15)], .coldStarting),
        row(.coldStarting, .processExited, [.suppressExit], .coldStarting),
        row(.coldStarting, .groupWakeRequested, [.answerGroupWake(.alreadyWaking)], .coldStarting),
    ]
    + ignored(
        .coldStarting,
        [
            .started, .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed,
            .execEnded, .deleteRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )
    // stopped (exit 0 reported, not deleted)
    + [
        row(.stopped, .connectionArrived, [.refuseConnection], .stopped),
        row(.stopped, .probeArrived, [.refuseConnection], .stopped),
        row(.stopped, .execStarted, [.rejectExec(id: "e1")], .stopped),
        row(.stopped, .processExited, [.suppressExit], .stopped),
        row(.stopped, .deleteRequested, [.cleanupAll], .stopped),
        row(.stopped, .activitySeen, [], .stopped),
        row(.stopped, .redirectUnavailable, [], .stopped),
        row(.stopped, .groupWakeRequested, [.answerGroupWake(.stopped)], .stopped),
    ]
    + ignored(
        .stopped,
        [
            .started, .idleDeadlineReached, .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed,
            .coldStartFinished, .coldStartFailed, .execEnded, .killRequested,
            .preDumpDeadlineReached, .preDumpFinished, .preDumpFailed,
            .lazyRestoreFailed,
        ]
    )

@Suite("Lifecycle: every (phase, event) pair")
struct LifecycleTableTests {
    @Test func table_coversEveryPhaseAndEventExactlyOnce() {
        var seen: [String: Int] = [:]
        for r in table { seen["\(r.phase)+\(r.kind)", default: 0] += 1 }
        for phase in LC.Phase.allCases {
            for kind in LC.Event.Kind.allCases {
                #expect(seen["\(phase)+\(kind)"] == 1, "pair \(phase) + \(kind) must have exactly one row")
            }
        }
        #expect(table.count == LC.Phase.allCases.count * LC.Event.Kind.allCases.count)
        #expect(sample.count == LC.Event.Kind.allCases.count)
    }

    /// The driver's split of every row: at most one answer, of the kinds that event may get, and
    /// the other actions as effects in their order.
    @Test(arguments: table)
    func step_splitsTheAnswerFromTheEffects(_ r: Row) throws {
        var lc = Fixture.lifecycle(in: r.phase)
        let event = try #require(sample[r.kind])
        let step = lc.step(event)
        #expect(step.effects.map(\.action) == r.actions.filter { $0 != step.answer.action }, "\(r.testDescription)")
        #expect(r.actions.count == step.effects.count + (step.answer == .none ? 0 : 1), "\(r.testDescription)")
        let allowed: Set<String>
        switch r.kind {
        case .connectionArrived: allowed = ["holdConnection", "forwardConnection", "refuseConnection"]
        case .probeArrived: allowed = ["answerProbe", "forwardConnection", "refuseConnection"]
        case .groupWakeRequested: allowed = ["holdConnection", "answerGroupWake"]
        case .execStarted: allowed = ["startExec", "holdExec", "rejectExec", "none"]
        case .killRequested: allowed = ["signalNow", "deferSignal", "none"]
        case .processExited: allowed = ["suppressExit", "none"]
        case .started, .idleDeadlineReached, .activitySeen, .redirectUnavailable, .checkpointFinished,
            .checkpointFailed, .restoreFinished, .restoreFailed, .lazyRestoreFailed, .coldStartFinished,
            .coldStartFailed, .execEnded, .deleteRequested, .preDumpDeadlineReached, .preDumpFinished,
            .preDumpFailed:
            allowed = ["none"]
        }
        let name = String(String(describing: step.answer).prefix { $0 != "(" })
        #expect(allowed.contains(name), "\(r.testDescription): answer \(step.answer)")
    }

    @Test(arguments: table)
    func transition(_ r: Row) throws {
        var lc = Fixture.lifecycle(in: r.phase)
        let before = LifecycleSnapshot(lc)
        let event = try #require(sample[r.kind])
        #expect(event.kind == r.kind)
        let actions = lc.event(event)
        #expect(actions == r.actions, "\(r.phase) + \(event)")
        #expect(lc.phase == r.next, "\(r.phase) + \(event)")
        if r.ignored {
            #expect(LifecycleSnapshot(lc) == before, "\(r.phase) + \(event) must change nothing")
        }
    }

    @Test func phases_mapOntoTheOriginalStatusNumbers() {
        #expect(LC.StatusPhase.allCases.map(\.rawValue) == [0, 1, 2, 3, 4])
        #expect(
            LC.StatusPhase.allCases.map(\.name) == [
                "SCALED_DOWN", "RUNNING", "STOPPING", "CHECKPOINT_FAILED", "RESTORE_FAILED",
            ]
        )
        let mapped = LC.Phase.allCases.map { "\($0.name)=\($0.originalStatus?.name ?? "-")" }
        #expect(
            mapped == [
                "CREATED=-", "RUNNING=RUNNING", "CHECKPOINTING=RUNNING", "SCALING_DOWN_BY_KILL=RUNNING",
                "SCALED_DOWN=SCALED_DOWN", "RESTORING=SCALED_DOWN", "COLD_STARTING=SCALED_DOWN", "STOPPED=STOPPING",
            ]
        )
    }
}
