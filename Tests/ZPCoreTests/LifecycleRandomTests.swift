// Long random event sequences against ContainerLifecycle, with an independent model of the
// driver's world that checks the invariants after every step. Seeds are printed on failure;
// rerun one with ZP_LIFECYCLE_SEED=<seed>; ZP_LIFECYCLE_RUNS / _STEPS / _SEED_BASE widen the search.
import Testing

@testable import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// The driver's view: operations in flight, held things, redirect and timer, built only from the
/// actions the state machine returned.
private struct World {
    enum Operation: Equatable { case checkpoint, kill, restore, coldStart }
    let config: LC.Configuration
    var now: UInt64 = 1_000_000_000
    var inFlight: Operation?
    var heldConnections = 0
    var heldExecs: [String] = []
    var runningExecs: Set<String> = []
    var redirect = false
    var timer: ZPInstant?
    /// The pre-dump timer, armed by `armPreDumpTimer`, dropped with the idle timer.
    var preDumpTimer: ZPInstant?
    var exitsReported = 0
    var everStarted = false
    var everStopped = false
    var checkpointForbidden: Bool
    var nextPid: Int32 = 100
    var oldPids: [Int32] = []
    var lastPid: Int32?
    var counts: [String: Int] = [:]
    /// A pre-dump ordered and not reported back (the driver runs one at a time).
    var preDumpInFlight = false
    /// A finished pre-dump image exists on disk (removed by cleanupImages/cleanupAll or replaced).
    var preDumpImage = false
    /// The checkpoint in flight is incremental (on a pre-dump image).
    var checkpointIncremental = false
    /// The process being dumped exited (the reaper saw it) during this checkpoint.
    var dumpedProcessExited = false
    /// The restore in flight is the full one after a lazy restore failed.
    var fullRestoreRuns = false
    /// Dry run: when `wouldScaleDown` was reported, until `wouldRestore` (or the process left
    /// RUNNING).
    var dryRunDownSince: UInt64?

    init(config: LC.Configuration, now: UInt64 = 1_000_000_000) {
        self.config = config
        self.now = now
        checkpointForbidden = !config.checkpointingEnabled
    }
}

private struct InvariantFailure: Error, CustomStringConvertible {
    var description: String
}

@Suite("Lifecycle: randomized event sequences")
struct LifecycleRandomTests {
    @Test func randomSequences_keepInvariantsAfterEveryStep() throws {
        let env = ProcessInfoLite()
        let runs = env.int("ZP_LIFECYCLE_RUNS") ?? 200
        let steps = env.int("ZP_LIFECYCLE_STEPS") ?? 500
        let fixedSeed = env.uint64("ZP_LIFECYCLE_SEED")
        // Fixed by default so CI is repeatable; set ZP_LIFECYCLE_SEED_BASE to explore other sequences.
        let seedBase = env.uint64("ZP_LIFECYCLE_SEED_BASE") ?? 0x5A5A_0000
        var totals: [String: Int] = [:]
        var phasesSeen: Set<LC.Phase> = []
        for run in 0..<(fixedSeed == nil ? runs : 1) {
            let seed = fixedSeed ?? (seedBase &+ UInt64(run) &* 7919)
            do {
                let result = try Self.drive(seed: seed, steps: steps)
                totals.merge(result.counts, uniquingKeysWith: +)
                phasesSeen.formUnion(result.phases)
            } catch {
                Issue.record("seed \(seed) (rerun: ZP_LIFECYCLE_SEED=\(seed)): \(error)")
                return
            }
        }
        print("lifecycle random: \(runs) runs x \(steps) events; action counts: \(totals.sorted { $0.key < $1.key })")
        // The generator must really reach every phase, or the invariants prove little.
        #expect(phasesSeen == Set(LC.Phase.allCases), "phases reached: \(phasesSeen)")
        for needed in [
            "startCheckpoint", "startRestore", "startColdStart", "startScaleDownKill", "releaseHeldConnections",
            "failHeldConnections", "startHeldExecs", "reportExit", "suppressExit", "deferSignal", "cleanupAll",
            "startPreDump", "startIncrementalCheckpoint", "armPreDumpTimer", "startFullRestore", "wakeGroup",
            "answerGroupWake", "emitDryRun",
        ] {
            #expect((totals[needed] ?? 0) > 0, "no \(needed) in any run")
        }
    }

    private static func drive(seed: UInt64, steps: Int) throws -> (counts: [String: Int], phases: Set<LC.Phase>) {
        var rng = SplitMix64(seed: seed)
        let durations: [Duration] = [.seconds(60), .seconds(60), .seconds(5), .zero]
        let config = LC.Configuration(
            scaleDownDuration: durations.randomElement(using: &rng)!,
            checkpointingEnabled: Int.random(in: 0..<4, using: &rng) != 0,
            openConnectionsCountAsActivity: Bool.random(using: &rng),
            preDump: Int.random(in: 0..<3, using: &rng) != 0,
            wakesGroup: Bool.random(using: &rng),
            dryRun: Int.random(in: 0..<4, using: &rng) == 0
        )
        var lc = LC(configuration: config)
        var world = World(config: config)
        var phases: Set<LC.Phase> = [lc.phase]
        var trace: [String] = []
        var counts: [String: Int] = [:]
        var stoppedSteps = 0
        for step in 0..<steps {
            // A stopped container stays stopped; after a while, continue with a fresh one.
            if lc.phase == .stopped { stoppedSteps += 1 }
            if stoppedSteps > 10 {
                counts.merge(world.counts, uniquingKeysWith: +)
                lc = LC(configuration: config)
                world = World(config: config, now: world.now)
                stoppedSteps = 0
                trace.append("-- new container --")
            }
            let event = makeEvent(&rng, &world, lc)
            let before = lc.phase
            let pidBefore = lc.pid
            let preDumpBefore = PreDumpBefore(
                inFlight: lc.preDumpInFlight,
                image: lc.hasPreDumpImage,
                deadline: lc.preDumpDeadline
            )
            let actions = lc.event(event)
            // The driver's split: at most one answer (two would trap), the rest effects in order.
            let step = LC.Step(event: event, actions: actions)
            trace.append("\(before) + \(event) -> \(actions) => \(lc.phase)")
            if trace.count > 12 { trace.removeFirst() }
            do {
                if step.effects.map(\.action) != actions.filter({ $0 != step.answer.action }) {
                    throw InvariantFailure(description: "step \(step) does not split \(actions)")
                }
                try check(
                    event: event,
                    before: before,
                    pidBefore: pidBefore,
                    preDumpBefore: preDumpBefore,
                    actions: actions,
                    lc: lc,
                    world: &world
                )
            } catch {
                throw InvariantFailure(
                    description: "step \(step): \(error)\n  last steps:\n    " + trace.joined(separator: "\n    ")
                )
            }
            phases.insert(lc.phase)
        }
        counts.merge(world.counts, uniquingKeysWith: +)
        return (counts, phases)
    }

    /// Picks the next event: mostly what a real driver could report now, sometimes anything.
    private static func makeEvent(_ rng: inout SplitMix64, _ w: inout World, _ lc: LC) -> LC.Event {
        w.now += UInt64.random(in: 0...20_000_000_000, using: &rng)
        let now = ZPInstant(nanoseconds: w.now)
        func pastInstant() -> ZPInstant? {
            if Int.random(in: 0..<3, using: &rng) == 0 { return nil }
            return ZPInstant(nanoseconds: w.now - UInt64.random(in: 0...min(w.now, 120_000_000_000), using: &rng))
        }
        let execId = "e\(Int.random(in: 0..<4, using: &rng))"
        let signal = [0, 1, 9, 15, 10].randomElement(using: &rng)!
        // Completions of the operation in flight are likely; so is the timer firing.
        let roll = Int.random(in: 0..<100, using: &rng)
        if let op = w.inFlight, roll < 35 {
            let ok = Int.random(in: 0..<4, using: &rng) != 0
            switch op {
            case .checkpoint:
                return ok
                    ? .checkpointFinished(duration: .milliseconds(200)) : .checkpointFailed(reason: "dump", now: now)
            case .kill:
                return .processExited(pid: lc.pid ?? 0, status: 137)
            case .restore:
                if ok { w.nextPid += 1 }
                if !ok && Bool.random(using: &rng) { return .lazyRestoreFailed(reason: "lazy") }
                return ok
                    ? .restoreFinished(pid: w.nextPid, duration: .milliseconds(90), now: now)
                    : .restoreFailed(reason: "restore")
            case .coldStart:
                if ok { w.nextPid += 1 }
                return ok ? .coldStartFinished(pid: w.nextPid, now: now) : .coldStartFailed(reason: "cold")
            }
        }
        if w.preDumpInFlight, roll >= 35, roll < 55 {
            return Int.random(in: 0..<5, using: &rng) != 0 ? .preDumpFinished : .preDumpFailed(reason: "random")
        }
        if let due = w.preDumpTimer, roll >= 55, roll < 70 {
            w.now = max(w.now, due.nanoseconds)
            return .preDumpDeadlineReached(
                lastActivity: pastInstant(),
                openConnections: Int.random(in: 0..<5, using: &rng) == 0 ? 1 : 0,
                now: ZPInstant(nanoseconds: w.now)
            )
        }
        if let deadline = w.timer, roll < 50 {
            w.now = max(w.now, deadline.nanoseconds)
            let now = ZPInstant(nanoseconds: w.now)
            return .idleDeadlineReached(
                lastActivity: pastInstant(),
                openConnections: Int.random(in: 0..<5, using: &rng) == 0 ? 1 : 0,
                now: now
            )
        }
        if lc.phase == .created && Bool.random(using: &rng) {
            w.nextPid += 1
            return .started(pid: w.nextPid, now: now)
        }
        switch Int.random(in: 0..<24, using: &rng) {
        case 0:
            w.nextPid += 1
            return .started(pid: w.nextPid, now: now)
        case 1: return .idleDeadlineReached(lastActivity: pastInstant(), now: now)
        case 2: return .activitySeen(at: pastInstant() ?? now)
        case 3 where Int.random(in: 0..<20, using: &rng) == 0: return .redirectUnavailable(reason: "random")
        case 3: return .probeArrived
        case 4: return .checkpointFinished(duration: .milliseconds(150))
        case 5: return .checkpointFailed(reason: "random", now: now)
        case 6, 7, 8: return .connectionArrived
        case 9: return .probeArrived
        case 10: return .restoreFinished(pid: 9_000, duration: .milliseconds(80), now: now)
        case 11: return .restoreFailed(reason: "random")
        case 12: return .coldStartFinished(pid: 9_001, now: now)
        case 13: return .coldStartFailed(reason: "random")
        case 14, 15: return .execStarted(id: execId)
        case 16, 17: return .execEnded(id: execId, now: now)
        case 18 where Int.random(in: 0..<4, using: &rng) == 0: return .killRequested(signal: Int32(signal))
        case 18: return .connectionArrived
        case 19:
            let stale = w.oldPids.randomElement(using: &rng) ?? 1
            let pid = Int.random(in: 0..<8, using: &rng) == 0 ? (lc.pid ?? 0) : stale
            return .processExited(pid: pid, status: Int32([0, 1, 137].randomElement(using: &rng)!))
        case 20 where Int.random(in: 0..<4, using: &rng) == 0: return .deleteRequested
        case 21 where Int.random(in: 0..<4, using: &rng) == 0:
            // Stray pre-dump facts: a late timer or a completion nobody waits for.
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: return .preDumpDeadlineReached(lastActivity: pastInstant(), now: now)
            case 1: return .preDumpFinished
            default: return .preDumpFailed(reason: "stray")
            }
        case 22: return .groupWakeRequested
        case 23 where Int.random(in: 0..<4, using: &rng) == 0: return .lazyRestoreFailed(reason: "stray")
        default: return .activitySeen(at: now)
        }
    }

    /// The machine's pre-dump view before the step.
    private struct PreDumpBefore {
        var inFlight: Bool
        var image: Bool
        var deadline: ZPInstant?
    }

    private static func check(
        event: LC.Event,
        before: LC.Phase,
        pidBefore: Int32?,
        preDumpBefore: PreDumpBefore,
        actions: [LC.Action],
        lc: LC,
        world w: inout World
    ) throws {
        func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
            if !condition { throw InvariantFailure(description: message()) }
        }
        let now = w.now
        let heldBefore = (connections: w.heldConnections, execs: w.heldExecs)
        // A completion clears the operation in flight only when the machine accepts it.
        let completes: World.Operation?
        switch (before, event) {
        case (.checkpointing, .checkpointFinished), (.checkpointing, .checkpointFailed): completes = .checkpoint
        case (.scalingDownByKill, .processExited(let pid, _)) where pid == pidBefore: completes = .kill
        case (.restoring, .restoreFinished), (.restoring, .restoreFailed): completes = .restore
        case (.restoring, .lazyRestoreFailed) where !w.fullRestoreRuns: completes = .restore
        case (.coldStarting, .coldStartFinished), (.coldStarting, .coldStartFailed): completes = .coldStart
        default: completes = nil
        }
        if case .processExited(let pid, _) = event, before == .checkpointing, pid == pidBefore {
            w.dumpedProcessExited = true
        }
        if let completes {
            try require(
                w.inFlight == completes,
                "completion of \(completes) but in flight: \(String(describing: w.inFlight))"
            )
            w.inFlight = nil
        } else {
            switch event.kind {
            case .checkpointFinished, .checkpointFailed, .restoreFinished, .restoreFailed, .coldStartFinished,
                .coldStartFailed, .lazyRestoreFailed:
                try require(actions.isEmpty && lc.phase == before, "completion with nothing in flight was accepted")
            case .started, .idleDeadlineReached, .activitySeen, .redirectUnavailable, .connectionArrived, .probeArrived,
                .execStarted, .execEnded, .killRequested, .processExited, .deleteRequested, .preDumpDeadlineReached,
                .preDumpFinished, .preDumpFailed, .groupWakeRequested:
                break
            }
        }
        // A pre-dump completion is accepted only while one is in flight in RUNNING.
        switch event {
        case .preDumpFinished, .preDumpFailed:
            if before == .running && preDumpBefore.inFlight {
                try require(w.preDumpInFlight, "pre-dump completion accepted but none in flight in the model")
                w.preDumpInFlight = false
                if case .preDumpFinished = event { w.preDumpImage = true }
            } else {
                try require(actions.isEmpty && lc.phase == before, "stray pre-dump completion was accepted: \(actions)")
            }
        default:
            break
        }

        // Per-event shape of the answer.
        switch event {
        case .connectionArrived:
            let answers = actions.filter { [.holdConnection, .forwardConnection, .refuseConnection].contains($0) }
            try require(answers.count == 1, "a connection needs exactly one answer, got \(actions)")
        case .probeArrived:
            try require(
                actions == [.answerProbe] || actions == [.forwardConnection] || actions == [.refuseConnection],
                "a probe must be answered, forwarded or refused and never wake: \(actions)"
            )
        case .processExited:
            let answers = actions.filter {
                if case .reportExit = $0 { return true }
                return $0 == .suppressExit
            }
            try require(answers.count == 1, "an exit needs exactly one of report/suppress, got \(actions)")
        case .execStarted(let id):
            let answers = actions.filter {
                $0 == .startExec(id: id) || $0 == .holdExec(id: id) || $0 == .rejectExec(id: id)
            }
            let duplicate = w.runningExecs.contains(id) || w.heldExecs.contains(id)
            try require(answers.count == (duplicate ? 0 : 1), "exec \(id) answered \(actions)")
        case .groupWakeRequested:
            let expected: LC.GroupWakeAnswer? =
                switch before {
                case .created, .running: .notScaledDown
                case .restoring, .coldStarting: .alreadyWaking
                case .stopped: .stopped
                case .checkpointing, .scalingDownByKill, .scaledDown: nil
                }
            if let expected {
                try require(actions == [.answerGroupWake(expected)], "group wake in \(before) answered \(actions)")
            } else {
                try require(actions.first == .holdConnection, "group wake in \(before) must be held: \(actions)")
            }
        case .lazyRestoreFailed where completes != nil:
            try require(actions == [.startFullRestore] && lc.phase == .restoring, "lazy restore failure: \(actions)")
        case .checkpointFailed where completes != nil && w.checkpointIncremental && !w.dumpedProcessExited:
            try require(
                actions == [.cleanupImages, .startCheckpoint] && lc.phase == .checkpointing,
                "a failed incremental checkpoint must be retried once as a plain dump: \(actions)"
            )
        case .preDumpDeadlineReached:
            let postponed = actions.count == 1 && { if case .armPreDumpTimer = actions[0] { true } else { false } }()
            try require(
                actions.isEmpty || actions == [.startPreDump] || postponed,
                "a pre-dump deadline may only start one or postpone it: \(actions)"
            )
        case .started, .idleDeadlineReached, .activitySeen, .redirectUnavailable, .checkpointFinished,
            .checkpointFailed,
            .restoreFinished, .restoreFailed, .coldStartFinished, .coldStartFailed, .execEnded, .killRequested,
            .deleteRequested, .preDumpFinished, .preDumpFailed, .lazyRestoreFailed:
            break
        }

        // The wake group is asked to come back exactly when a connection or exec starts bringing
        // the container back: it starts a restore or cold start, or it is the first to wait for a
        // scale-down in flight. Before the restore is ordered, so it does not wait behind it.
        let wakeGroupCount = actions.filter { $0 == .wakeGroup }.count
        let connectionOrExec: Bool
        switch event.kind {
        case .connectionArrived, .execStarted: connectionOrExec = true
        default: connectionOrExec = false
        }
        let wakes = actions.contains(.startRestore) || actions.contains(.startColdStart)
        let firstToWait =
            (before == .checkpointing || before == .scalingDownByKill) && heldBefore.connections == 0
            && heldBefore.execs.isEmpty
            && actions.contains(where: { if case .holdExec = $0 { true } else { $0 == .holdConnection } })
        let groupWakeExpected = w.config.wakesGroup && connectionOrExec && (wakes || firstToWait)
        try require(
            wakeGroupCount == (groupWakeExpected ? 1 : 0),
            "wakeGroup expected=\(groupWakeExpected): \(actions)"
        )
        if let i = actions.firstIndex(of: .wakeGroup),
            let j = actions.firstIndex(where: { $0 == .startRestore || $0 == .startColdStart })
        {
            try require(i < j, "wakeGroup after the wake it goes with: \(actions)")
        }

        if case .execEnded(let id, _) = event {
            if let i = w.heldExecs.firstIndex(of: id) {
                w.heldExecs.remove(at: i)
            } else {
                w.runningExecs.remove(id)
            }
        }
        if case .started = event, before == .created { w.everStarted = true }
        // The pre-dump timer fired: it is spent (an order in this step may arm it again).
        if case .preDumpDeadlineReached(_, _, let at) = event, let t = w.preDumpTimer, at >= t {
            w.preDumpTimer = nil
        }

        for action in actions {
            w.counts[Self.name(of: action), default: 0] += 1
            // A dry run reports; it never touches the process, its memory or the redirect.
            switch action {
            case .enableRedirect, .startCheckpoint, .startIncrementalCheckpoint, .startPreDump, .startScaleDownKill,
                .startRestore, .startFullRestore, .startColdStart, .armPreDumpTimer, .wakeGroup:
                try require(!w.config.dryRun, "\(action) in a dry run")
            case .armIdleTimer, .cancelIdleTimer, .disableRedirect, .holdConnection, .forwardConnection,
                .refuseConnection, .releaseHeldConnections, .failHeldConnections, .answerProbe, .answerGroupWake,
                .startExec, .holdExec, .startHeldExecs, .failHeldExecs, .rejectExec, .deferSignal, .signalProcess,
                .emitStatus, .suppressExit, .reportExit, .cleanupImages, .cleanupAll, .emitDryRun:
                break
            }
            switch action {
            case .startCheckpoint, .startIncrementalCheckpoint, .startScaleDownKill, .startRestore, .startColdStart,
                .startFullRestore:
                try require(w.inFlight == nil, "\(action) while \(String(describing: w.inFlight)) is in flight")
                switch action {
                case .startCheckpoint, .startIncrementalCheckpoint:
                    try require(!w.checkpointForbidden, "checkpoint after checkpointing was turned off")
                    try require(w.runningExecs.isEmpty, "scale-down while execs run: \(w.runningExecs)")
                    try require(!w.preDumpInFlight, "checkpoint while a pre-dump runs")
                    if action == .startIncrementalCheckpoint {
                        try require(w.preDumpImage, "incremental checkpoint without a pre-dump image")
                    }
                    if before != .checkpointing { w.dumpedProcessExited = false }
                    w.checkpointIncremental = action == .startIncrementalCheckpoint
                    w.inFlight = .checkpoint
                case .startScaleDownKill:
                    try require(w.runningExecs.isEmpty, "scale-down while execs run: \(w.runningExecs)")
                    w.inFlight = .kill
                case .startRestore:
                    w.fullRestoreRuns = false
                    w.inFlight = .restore
                case .startFullRestore:
                    try require(before == .restoring && !w.fullRestoreRuns, "full restore outside a failed lazy one")
                    w.fullRestoreRuns = true
                    w.inFlight = .restore
                default: w.inFlight = .coldStart
                }
                if let pid = pidBefore,
                    action == .startCheckpoint || action == .startIncrementalCheckpoint || action == .startScaleDownKill
                {
                    w.oldPids.append(pid)
                }
            case .holdConnection:
                w.heldConnections += 1
            case .releaseHeldConnections(let n), .failHeldConnections(let n):
                try require(n > 0 && n == w.heldConnections, "\(action) but \(w.heldConnections) held")
                w.heldConnections = 0
            case .holdExec(let id):
                w.heldExecs.append(id)
            case .startHeldExecs(let ids):
                try require(ids == w.heldExecs && !ids.isEmpty, "\(action) but held \(w.heldExecs)")
                w.runningExecs.formUnion(ids)
                w.heldExecs = []
            case .failHeldExecs(let ids):
                try require(ids == w.heldExecs && !ids.isEmpty, "\(action) but held \(w.heldExecs)")
                w.heldExecs = []
            case .startExec(let id):
                try require(w.runningExecs.insert(id).inserted, "exec \(id) started twice")
            case .rejectExec:
                try require(before == .created || before == .stopped, "exec rejected while \(before)")
            case .enableRedirect:
                try require(!w.redirect, "redirect enabled twice")
                w.redirect = true
            case .disableRedirect:
                try require(w.redirect, "redirect disabled while off")
                w.redirect = false
            case .armIdleTimer(let deadline):
                try require(deadline.nanoseconds > now, "timer armed in the past: \(deadline) at \(now)")
                try require(w.config.scaleDownDuration > .zero, "timer armed with scale-down disabled")
                w.timer = deadline
                w.preDumpTimer = nil
            case .cancelIdleTimer:
                try require(w.timer != nil, "cancel without an armed timer")
                w.timer = nil
                w.preDumpTimer = nil
            case .armPreDumpTimer(let deadline):
                try require(deadline.nanoseconds > now, "pre-dump timer armed in the past: \(deadline) at \(now)")
                let idle = try #require(w.timer, "pre-dump timer armed without an idle timer")
                try require(deadline < idle, "pre-dump timer \(deadline) not before the idle timer \(idle)")
                w.preDumpTimer = deadline
            case .reportExit:
                try require(w.exitsReported == 0, "exit reported twice")
                try require(w.everStarted || before == .created, "exit reported for a never-started container")
                w.exitsReported += 1
                w.runningExecs = []
            case .emitStatus(let status, _, _):
                if status == .checkpointFailed || status == .restoreFailed { w.checkpointForbidden = true }
            case .deferSignal(let s):
                try require(s != 0, "signal 0 deferred")
            case .startPreDump:
                try require(before == .running && lc.phase == .running, "pre-dump outside RUNNING: \(before)")
                try require(!w.preDumpInFlight, "second pre-dump while one runs")
                try require(w.config.preDump && !w.checkpointForbidden, "pre-dump not configured or checkpointing off")
                try require(w.runningExecs.isEmpty, "pre-dump while execs run")
                w.preDumpInFlight = true
                w.preDumpImage = false  // the driver replaces the old image
            case .cleanupImages, .cleanupAll:
                w.preDumpImage = false
            case .emitDryRun(let decision):
                try require(w.config.dryRun, "\(action) without a dry run")
                try require(before == .running && lc.phase == .running, "\(action) in \(before) → \(lc.phase)")
                switch decision {
                case .wouldScaleDown:
                    try require(event.kind == .idleDeadlineReached, "\(action) on \(event)")
                    try require(w.dryRunDownSince == nil, "would scale down twice")
                    w.dryRunDownSince = now
                case .wouldRestore(let wake):
                    let since = try #require(w.dryRunDownSince, "would restore without a would-scale-down")
                    switch (wake, event) {
                    case (.traffic(let at), .idleDeadlineReached):
                        try require(
                            at.nanoseconds > since && at.nanoseconds <= now,
                            "traffic \(at) since \(since) at \(now)"
                        )
                    case (.exec(let id), .execStarted(let started)):
                        try require(id == started, "would restore for exec \(id) on \(event)")
                    case (.redirectLost, .redirectUnavailable):
                        break
                    default:
                        throw InvariantFailure(description: "\(action) on \(event)")
                    }
                    w.dryRunDownSince = nil
                }
            case .answerProbe, .forwardConnection, .refuseConnection, .suppressExit, .signalProcess, .wakeGroup,
                .answerGroupWake:
                break
            }
        }
        // The timer fired (it is not re-armed by this step): the driver's timer is spent.
        if case .idleDeadlineReached(_, _, let at) = event, let t = w.timer, at >= t,
            !actions.contains(where: { if case .armIdleTimer = $0 { return true } else { return false } })
        {
            w.timer = nil
            w.preDumpTimer = nil  // dropped with the idle timer
            try require(lc.idleDeadline == nil, "deadline passed but the machine still has one")
        }

        // State invariants after every step.
        let phase = lc.phase
        if phase != .running { w.dryRunDownSince = nil }
        try require((w.dryRunDownSince != nil) == lc.dryRunScaledDown, "dry-run down model vs \(lc.dryRunScaledDown)")
        if lc.dryRunScaledDown { try require(lc.idleDeadline != nil, "virtually down without a poll armed") }
        if w.everStopped { try require(phase == .stopped, "left stopped for \(phase)") }
        if phase == .stopped { w.everStopped = true }
        try require(w.redirect == lc.redirectEnabled, "redirect model \(w.redirect) vs machine \(lc.redirectEnabled)")
        try require(
            w.timer == lc.idleDeadline,
            "timer model \(String(describing: w.timer)) vs \(String(describing: lc.idleDeadline))"
        )
        try require(
            w.preDumpTimer == lc.preDumpDeadline,
            "pre-dump timer model \(String(describing: w.preDumpTimer)) vs \(String(describing: lc.preDumpDeadline))"
        )
        let shouldBeArmed =
            phase == .running && lc.runningExecs.isEmpty && lc.scaleDownEnabled && !lc.scaleDownWaitsForPreDump
        // Pre-dump invariants.
        if phase != .running { w.preDumpInFlight = false }
        try require(w.preDumpInFlight == lc.preDumpInFlight, "pre-dump in flight model \(w.preDumpInFlight)")
        if lc.hasPreDumpImage { try require(w.preDumpImage, "the machine counts on a pre-dump image that is gone") }
        if let due = lc.preDumpDeadline {
            try require(phase == .running && w.config.preDump && lc.preDumpEnabled, "pre-dump deadline in \(phase)")
            try require(lc.checkpointingEnabled && !lc.preDumpInFlight, "pre-dump deadline while not wanted")
            let idle = try #require(lc.idleDeadline, "pre-dump deadline without an idle timer")
            try require(due < idle, "pre-dump deadline \(due) not before the idle deadline \(idle)")
            if due != preDumpBefore.deadline {
                try require(due.nanoseconds > now, "pre-dump deadline armed in the past")
            }
        }
        if lc.scaleDownWaitsForPreDump {
            try require(lc.preDumpInFlight && lc.idleDeadline == nil, "waiting for a pre-dump that does not run")
        }
        try require((lc.idleDeadline != nil) == shouldBeArmed, "timer armed=\(lc.idleDeadline != nil) in \(phase)")
        try require(w.heldConnections == lc.heldConnections, "held model \(w.heldConnections) vs \(lc.heldConnections)")
        try require(w.heldExecs == lc.heldExecs, "held execs model \(w.heldExecs) vs \(lc.heldExecs)")
        try require(w.runningExecs == Set(lc.runningExecs), "execs model \(w.runningExecs) vs \(lc.runningExecs)")
        try require(lc.runningExecs.count == Set(lc.runningExecs).count, "duplicate exec ids")
        let waiting: Set<LC.Phase> = [.checkpointing, .scalingDownByKill, .restoring, .coldStarting]
        if !waiting.contains(phase) {
            try require(
                lc.heldConnections == 0 && lc.heldExecs.isEmpty && lc.deferredSignals.isEmpty,
                "waiters left in \(phase)"
            )
        }
        let expected: World.Operation? =
            switch phase {
            case .checkpointing: .checkpoint
            case .scalingDownByKill: .kill
            case .restoring: .restore
            case .coldStarting: .coldStart
            case .created, .running, .scaledDown, .stopped: nil
            }
        try require(w.inFlight == expected, "in flight \(String(describing: w.inFlight)) in \(phase)")
        try require(lc.appearsRunning == (phase != .created && phase != .stopped), "appearsRunning in \(phase)")
        if w.everStarted && phase != .stopped { try require(lc.pid != nil, "no pid after start") }
        if w.checkpointForbidden { try require(!lc.checkpointingEnabled, "checkpointing on after a failure") }
        if lc.phase == .stopped && w.everStarted && before != .created {
            try require(w.exitsReported == 1 || lc.exitStatus == nil, "stopped without a reported exit")
        }
    }

    private static func name(of action: LC.Action) -> String {
        let text = String(describing: action)
        return String(text.prefix { $0 != "(" })
    }
}

/// Reads test knobs from the environment without Foundation.
private struct ProcessInfoLite {
    func string(_ key: String) -> String? {
        guard let value = getenv(key) else { return nil }
        return String(cString: value)
    }
    func int(_ key: String) -> Int? { string(key).flatMap { Int($0) } }
    func uint64(_ key: String) -> UInt64? { string(key).flatMap { UInt64($0) } }
}
