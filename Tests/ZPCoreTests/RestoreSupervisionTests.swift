// RestoreSupervision: every (phase, event) pair with the exact answer and effects, the scenarios
// of decision 0009 (lazy restore, daemon ending early, busy daemon, delete), and random sequences
// that account for every preparation, image removal and waiting checkpoint.
import Testing

@testable import ZPCore

#if canImport(Glibc)
import Glibc
#endif

private typealias RS = RestoreSupervision<String>

/// The supervision driven into `phase` through real events. Serving and settling hold "p1"
/// (ticket 1) served by "lazy-pages (pid 9)".
private func supervision(in phase: RS.Phase, checkpointWaiting: Bool = false) -> RS {
    var rs = RS(containerID: "c1", busyLimit: .seconds(60))
    var events: [RS.Event] = []
    switch phase {
    case .idle: break
    case .prepared: events = [.restorePrepared("p1")]
    case .restoring: events = [.restorePrepared("p1"), .restoreStarted]
    case .serving:
        events = [.restorePrepared("p1"), .restoreStarted, .preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 9)")]
    case .settling:
        events = [
            .restorePrepared("p1"), .restoreStarted, .preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 9)"),
            .daemonObserved(ticket1, exited: true, now: at(5)),
        ]
    }
    if checkpointWaiting { events.append(.checkpointRequested(now: at(10))) }
    for e in events { _ = rs.event(e) }
    precondition(rs.phase == phase, "fixture \(phase) reached \(rs.phase)")
    return rs
}

private let ticket1 = RS.Ticket(number: 1)

/// One sample per event kind.
private let samples: [(String, RS.Event)] = [
    ("restorePrepared", .restorePrepared("p2")),
    ("restoreStarted", .restoreStarted),
    ("preparedRestoreFinished lazy", .preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 10)")),
    ("preparedRestoreFinished full", .preparedRestoreFinished(lazyDaemon: nil)),
    ("preparedRestoreFailed", .preparedRestoreFailed),
    ("imagesObsolete", .imagesObsolete),
    ("containerDeleted", .containerDeleted),
    ("driverStopped", .driverStopped),
    ("checkpointRequested", .checkpointRequested(now: at(20))),
    ("daemonObserved exited", .daemonObserved(ticket1, exited: true, now: at(20))),
    ("daemonObserved running", .daemonObserved(ticket1, exited: false, now: at(20))),
    ("daemonJudged clean", .daemonJudged(ticket1, clean: true, how: "exit code 0")),
    ("daemonJudged early", .daemonJudged(ticket1, clean: false, how: "signal 9")),
]

private struct SRow: Sendable, CustomTestStringConvertible {
    var phase: RS.Phase
    var event: String
    var answer: RS.Answer
    var effects: [RS.Effect]
    var next: RS.Phase
    var testDescription: String { "\(phase) + \(event)" }
}

private func row(
    _ phase: RS.Phase,
    _ event: String,
    _ effects: [RS.Effect],
    _ next: RS.Phase,
    answer: RS.Answer = .none
) -> SRow {
    SRow(phase: phase, event: event, answer: answer, effects: effects, next: next)
}

private let early =
    "lazy-pages (pid 9) ended before serving every page (signal 9): "
    + "the restored process of container c1 lacks pages it can no longer get"

private let supervisionTable: [SRow] = [
    // idle
    row(.idle, "restorePrepared", [], .prepared),
    row(.idle, "restoreStarted", [], .idle, answer: .runWithoutPreparation),
    row(.idle, "preparedRestoreFinished lazy", [], .idle),
    row(.idle, "preparedRestoreFinished full", [], .idle),
    row(.idle, "preparedRestoreFailed", [], .idle),
    row(.idle, "imagesObsolete", [.removeImages], .idle),
    row(.idle, "containerDeleted", [.removeImages], .idle),
    row(.idle, "driverStopped", [], .idle),
    row(.idle, "checkpointRequested", [], .idle, answer: .checkpoint(.clear)),
    row(.idle, "daemonObserved exited", [], .idle),
    row(.idle, "daemonObserved running", [], .idle),
    row(.idle, "daemonJudged clean", [], .idle),
    row(.idle, "daemonJudged early", [], .idle),
    // prepared (p1)
    row(.prepared, "restorePrepared", [.discard("p1")], .prepared),
    row(.prepared, "restoreStarted", [], .restoring, answer: .runPrepared("p1")),
    row(.prepared, "preparedRestoreFinished lazy", [], .prepared),
    row(.prepared, "preparedRestoreFinished full", [], .prepared),
    row(.prepared, "preparedRestoreFailed", [], .prepared),
    row(.prepared, "imagesObsolete", [.discard("p1"), .removeImages], .idle),
    row(.prepared, "containerDeleted", [.discard("p1"), .removeImages], .idle),
    row(.prepared, "driverStopped", [.discard("p1")], .idle),
    row(.prepared, "checkpointRequested", [], .prepared, answer: .checkpoint(.clear)),
    row(.prepared, "daemonObserved exited", [], .prepared),
    row(.prepared, "daemonObserved running", [], .prepared),
    row(.prepared, "daemonJudged clean", [], .prepared),
    row(.prepared, "daemonJudged early", [], .prepared),
    // restoring (p1 runs)
    row(.restoring, "restorePrepared", [.discard("p2")], .restoring),
    row(.restoring, "restoreStarted", [], .restoring, answer: .runWithoutPreparation),
    row(.restoring, "preparedRestoreFinished lazy", [], .serving),
    row(.restoring, "preparedRestoreFinished full", [.discard("p1")], .idle),
    row(.restoring, "preparedRestoreFailed", [.discard("p1")], .idle),
    row(.restoring, "imagesObsolete", [], .restoring),
    row(.restoring, "containerDeleted", [], .restoring),
    row(.restoring, "driverStopped", [], .restoring),
    row(.restoring, "checkpointRequested", [], .restoring, answer: .checkpoint(.clear)),
    row(.restoring, "daemonObserved exited", [], .restoring),
    row(.restoring, "daemonObserved running", [], .restoring),
    row(.restoring, "daemonJudged clean", [], .restoring),
    row(.restoring, "daemonJudged early", [], .restoring),
    // serving (p1, ticket 1)
    row(.serving, "restorePrepared", [.discard("p2")], .serving),
    row(.serving, "restoreStarted", [], .serving, answer: .runWithoutPreparation),
    row(.serving, "preparedRestoreFinished lazy", [], .serving),
    row(.serving, "preparedRestoreFinished full", [], .serving),
    row(.serving, "preparedRestoreFailed", [], .serving),
    row(.serving, "imagesObsolete", [], .serving),
    row(.serving, "containerDeleted", [.discard("p1"), .removeImages], .idle),
    row(.serving, "driverStopped", [.discard("p1")], .idle),
    row(.serving, "checkpointRequested", [], .serving, answer: .checkpoint(.waitForDaemon)),
    row(.serving, "daemonObserved exited", [.judgeDaemonEnd(ticket1, "p1")], .settling),
    row(.serving, "daemonObserved running", [], .serving),
    row(.serving, "daemonJudged clean", [], .serving),
    row(.serving, "daemonJudged early", [], .serving),
    // settling (p1, ticket 1, being judged)
    row(.settling, "restorePrepared", [.discard("p2")], .settling),
    row(.settling, "restoreStarted", [], .settling, answer: .runWithoutPreparation),
    row(.settling, "preparedRestoreFinished lazy", [], .settling),
    row(.settling, "preparedRestoreFinished full", [], .settling),
    row(.settling, "preparedRestoreFailed", [], .settling),
    row(.settling, "imagesObsolete", [], .settling),
    row(.settling, "containerDeleted", [], .settling),
    row(.settling, "driverStopped", [], .settling),
    row(.settling, "checkpointRequested", [], .settling, answer: .checkpoint(.waitForDaemon)),
    row(.settling, "daemonObserved exited", [], .settling),
    row(.settling, "daemonObserved running", [], .settling),
    row(.settling, "daemonJudged clean", [.discard("p1")], .idle),
    row(.settling, "daemonJudged early", [.killRestoredProcesses(reason: early), .discard("p1")], .idle),
]

@Suite("Restore supervision")
struct RestoreSupervisionTests {
    @Test func table_coversEveryPhaseAndEventExactlyOnce() {
        var seen: [String: Int] = [:]
        for r in supervisionTable { seen["\(r.phase)+\(r.event)", default: 0] += 1 }
        for phase in RS.Phase.allCases {
            for (name, _) in samples {
                #expect(seen["\(phase)+\(name)"] == 1, "\(phase) + \(name) needs exactly one row")
            }
        }
        #expect(supervisionTable.count == RS.Phase.allCases.count * samples.count)
    }

    @Test(arguments: supervisionTable)
    fileprivate func transition(_ r: SRow) throws {
        var rs = supervision(in: r.phase)
        let event = try #require(samples.first { $0.0 == r.event }?.1)
        let step = rs.event(event)
        #expect(step.answer == r.answer, "\(r.testDescription)")
        #expect(step.effects == r.effects, "\(r.testDescription)")
        #expect(rs.phase == r.next, "\(r.testDescription)")
    }

    // MARK: scenarios (decision 0009)

    @Test func lazyRestore_imagesStayUntilTheDaemonFinished_thenGo() {
        var rs = supervision(in: .serving)
        #expect(rs.event(.imagesObsolete).effects == [])
        #expect(rs.imageRemovalDeferred)
        #expect(rs.event(.daemonObserved(ticket1, exited: false, now: at(6))).effects == [])
        #expect(
            rs.event(.daemonObserved(ticket1, exited: true, now: at(7))).effects == [.judgeDaemonEnd(ticket1, "p1")]
        )
        #expect(
            rs.event(.daemonJudged(ticket1, clean: true, how: "exit code 0")).effects == [
                .discard("p1"), .removeImages,
            ]
        )
        #expect(rs.phase == .idle && !rs.imageRemovalDeferred && rs.untrustedReason == nil)
        #expect(rs.event(.checkpointRequested(now: at(8))).answer == .checkpoint(.clear))
    }

    @Test func checkpoint_waitsForTheDaemon_andGoesOnWhenItFinishedCleanly() {
        var rs = supervision(in: .serving)
        _ = rs.event(.imagesObsolete)
        #expect(rs.event(.checkpointRequested(now: at(10))).answer == .checkpoint(.waitForDaemon))
        _ = rs.event(.daemonObserved(ticket1, exited: true, now: at(11)))
        // A checkpoint also waits while the end is judged.
        #expect(rs.checkpointWaitsForDaemon)
        #expect(
            rs.event(.daemonJudged(ticket1, clean: true, how: "exit code 0")).effects == [
                .discard("p1"), .removeImages, .resumeCheckpoint(refusal: nil),
            ]
        )
        #expect(!rs.checkpointWaitsForDaemon)
    }

    @Test func daemonEndingEarly_killsTheProcesses_andRefusesTheCheckpoints() {
        var rs = supervision(in: .settling, checkpointWaiting: true)
        let step = rs.event(.daemonJudged(ticket1, clean: false, how: "signal 9"))
        #expect(
            step.effects == [.killRestoredProcesses(reason: early), .discard("p1"), .resumeCheckpoint(refusal: early)]
        )
        #expect(rs.untrustedReason == early)
        #expect(rs.event(.checkpointRequested(now: at(30))).answer == .checkpoint(.refused(reason: early)))
        // A new lazy restore trusts its process again.
        _ = rs.event(.restorePrepared("p2"))
        _ = rs.event(.restoreStarted)
        _ = rs.event(.preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 11)"))
        #expect(rs.untrustedReason == nil)
    }

    @Test func busyDaemon_isStoppedAfterTheLimit_whichCountsAsAnEarlyEnd() {
        var rs = supervision(in: .serving)
        #expect(rs.event(.checkpointRequested(now: at(10))).answer == .checkpoint(.waitForDaemon))
        #expect(rs.event(.daemonObserved(ticket1, exited: false, now: at(69))).effects == [])
        let busy =
            "lazy-pages (pid 9) ended before serving every page (still busy after 60 s, killed by the shim): "
            + "the restored process of container c1 lacks pages it can no longer get"
        #expect(
            rs.event(.daemonObserved(ticket1, exited: false, now: at(70))).effects == [
                .killRestoredProcesses(reason: busy), .stopBusyDaemon("p1"), .discard("p1"),
                .resumeCheckpoint(refusal: busy),
            ]
        )
        #expect(rs.phase == .idle)
        // A late judgement of the stopped daemon changes nothing.
        #expect(rs.event(.daemonJudged(ticket1, clean: true, how: "exit code 0")).effects == [])
    }

    @Test func daemonWithoutProgress_isHung_processesKilledBeforeTheDaemonIsStopped() {
        var rs = supervision(in: .serving)
        // Progress moves: never hung, however long it serves.
        for second in 0..<30 {
            let step = rs.event(.daemonObserved(ticket1, exited: false, progress: UInt64(second), now: at(second)))
            #expect(step.effects == [])
        }
        // Then it stays at 29 from t=29: hung at t=39 (10 s), not before, with no checkpoint waiting.
        #expect(rs.event(.daemonObserved(ticket1, exited: false, progress: 29, now: at(38))).effects == [])
        let hung =
            "lazy-pages (pid 9) ended before serving every page (no progress for 10 s (hung), killed by the shim): "
            + "the restored process of container c1 lacks pages it can no longer get"
        #expect(
            rs.event(.daemonObserved(ticket1, exited: false, progress: 29, now: at(39))).effects == [
                .killRestoredProcesses(reason: hung), .stopBusyDaemon("p1"), .discard("p1"),
            ]
        )
        #expect(rs.phase == .idle)
        #expect(rs.untrustedReason == hung)
        #expect(rs.event(.checkpointRequested(now: at(40))).answer == .checkpoint(.refused(reason: hung)))
    }

    @Test func unknownProgress_detectsNoHang_andANewRestoreStartsItsOwnClock() {
        var rs = supervision(in: .serving)
        #expect(rs.event(.daemonObserved(ticket1, exited: false, progress: 5, now: at(0))).effects == [])
        #expect(rs.event(.daemonObserved(ticket1, exited: false, progress: nil, now: at(100))).effects == [])
        #expect(rs.phase == .serving)
        // The daemon exits cleanly; the next lazy restore's daemon is timed from its own first figure.
        _ = rs.event(.daemonObserved(ticket1, exited: true, now: at(101)))
        _ = rs.event(.daemonJudged(ticket1, clean: true, how: "exit code 0"))
        _ = rs.event(.restorePrepared("p2"))
        _ = rs.event(.restoreStarted)
        _ = rs.event(.preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 11)"))
        guard let ticket2 = rs.serving?.ticket else {
            Issue.record("not serving after the second lazy restore")
            return
        }
        #expect(rs.event(.daemonObserved(ticket2, exited: false, progress: 5, now: at(200))).effects == [])
        #expect(rs.event(.daemonObserved(ticket2, exited: false, progress: 5, now: at(209))).effects == [])
        #expect(rs.phase == .serving)
    }

    @Test func withoutAWaitingCheckpoint_aBusyDaemonIsLeftAlone() {
        var rs = supervision(in: .serving)
        #expect(rs.event(.daemonObserved(ticket1, exited: false, now: at(10_000))).effects == [])
        #expect(rs.phase == .serving)
    }

    @Test func deleteWhileServing_stopsTheDaemonWithoutJudgingIt_andResumesAWaitingCheckpoint() {
        var rs = supervision(in: .serving, checkpointWaiting: true)
        #expect(
            rs.event(.containerDeleted).effects == [.discard("p1"), .resumeCheckpoint(refusal: nil), .removeImages]
        )
        #expect(rs.event(.daemonObserved(ticket1, exited: true, now: at(20))).effects == [])
    }

    @Test func stopWhileSettling_judgesWithoutKilling_andRemovesTheImagesAfterwards() {
        var rs = supervision(in: .settling)
        _ = rs.event(.imagesObsolete)
        #expect(rs.event(.driverStopped).effects == [])
        #expect(
            rs.event(.daemonJudged(ticket1, clean: false, how: "signal 9")).effects == [.discard("p1"), .removeImages]
        )
        #expect(rs.untrustedReason == nil)
        // Anything prepared after the stop is discarded at once.
        #expect(rs.event(.restorePrepared("p3")).effects == [.discard("p3")])
    }

    @Test func deleteWhileTheRestoreRuns_removesTheImagesAfterIt() {
        var rs = supervision(in: .restoring)
        #expect(rs.event(.containerDeleted).effects == [])
        #expect(rs.event(.preparedRestoreFailed).effects == [.discard("p1"), .removeImages])
    }

    @Test func lazyRestoreFinishingAfterTheStop_isDiscarded() {
        var rs = supervision(in: .restoring)
        _ = rs.event(.driverStopped)
        #expect(rs.event(.preparedRestoreFinished(lazyDaemon: "lazy-pages (pid 9)")).effects == [.discard("p1")])
        #expect(rs.phase == .idle)
    }

    // MARK: random sequences

    /// Every preparation handed in is discarded exactly once (after a final stop and judgement);
    /// never while its restore runs; images are never removed while a daemon that was not
    /// discarded may read them; a waiting checkpoint is resumed exactly once, and never cleared
    /// while a daemon serves.
    @Test func randomSequences_accountForEveryPreparation() {
        var rng = SplitMix64(seed: 0x0517)
        for run in 0..<300 {
            var rs = RS(containerID: "c", busyLimit: .seconds(60))
            var handedIn = 0
            var discarded: [String: Int] = [:]
            var running: String?
            var liveDaemon: String?
            var waiting = false
            var pendingJudge: RS.Ticket?
            var now: UInt64 = 0
            var trace: [String] = []
            func fail(_ message: String) -> Bool {
                let last = trace.suffix(10).joined(separator: "\n  ")
                Issue.record("run \(run): \(message)\n  \(last)")
                return false
            }
            for _ in 0..<200 {
                now += UInt64.random(in: 0...30, using: &rng) * 1_000_000_000
                let instant = ZPInstant(nanoseconds: now)
                let ticket = rs.serving?.ticket ?? RS.Ticket(number: UInt64.random(in: 1...4, using: &rng))
                let event: RS.Event
                switch Int.random(in: 0..<11, using: &rng) {
                case 0:
                    handedIn += 1
                    event = .restorePrepared("p\(handedIn)")
                case 1: event = .restoreStarted
                case 2: event = .preparedRestoreFinished(lazyDaemon: Bool.random(using: &rng) ? "d" : nil)
                case 3: event = .preparedRestoreFailed
                case 4: event = .imagesObsolete
                case 5 where Int.random(in: 0..<4, using: &rng) == 0: event = .containerDeleted
                case 6: event = .checkpointRequested(now: instant)
                case 7, 8: event = .daemonObserved(ticket, exited: Bool.random(using: &rng), now: instant)
                case 9: event = .daemonJudged(pendingJudge ?? ticket, clean: Bool.random(using: &rng), how: "x")
                default: event = .checkpointRequested(now: instant)
                }
                let before = rs.phase
                let step = rs.event(event)
                trace.append("\(before) + \(event) -> \(step.answer) \(step.effects) => \(rs.phase)")
                if case .runPrepared(let p) = step.answer { running = p }
                if case .checkpoint(let clearance) = step.answer {
                    switch clearance {
                    case .waitForDaemon:
                        waiting = true
                    case .clear, .refused:
                        if before == .serving || before == .settling {
                            _ = fail("checkpoint cleared while a daemon serves")
                        }
                    }
                }
                for effect in step.effects {
                    switch effect {
                    case .discard(let p):
                        discarded[p, default: 0] += 1
                        if p == running { running = nil }
                        if p == liveDaemon { liveDaemon = nil }
                    case .removeImages:
                        if liveDaemon != nil {
                            _ = fail("images removed while the daemon of \(liveDaemon!) may read them")
                        }
                        if running != nil { _ = fail("images removed while the restore of \(running!) runs") }
                    case .resumeCheckpoint:
                        if !waiting { _ = fail("resumed a checkpoint that did not wait") }
                        waiting = false
                    case .judgeDaemonEnd(let t, _):
                        if pendingJudge != nil { _ = fail("a second judgement while one is under way") }
                        pendingJudge = t
                    case .stopBusyDaemon, .killRestoredProcesses:
                        break
                    }
                }
                if case .serving = rs.phase, let p = rs.serving?.preparation {
                    liveDaemon = p
                    if running == p { running = nil }
                }
                if rs.phase == .restoring, running == nil { _ = fail("restoring without a preparation given to run") }
                if rs.phase != .settling { pendingJudge = nil }
            }
            // The end: stop, and let a judgement under way finish.
            for effect in rs.event(.driverStopped).effects {
                switch effect {
                case .discard(let p): discarded[p, default: 0] += 1
                case .resumeCheckpoint: waiting = false
                case .removeImages, .judgeDaemonEnd, .stopBusyDaemon, .killRestoredProcesses: break
                }
            }
            if rs.phase == .settling, let t = pendingJudge {
                for effect in rs.event(.daemonJudged(t, clean: true, how: "x")).effects {
                    switch effect {
                    case .discard(let p): discarded[p, default: 0] += 1
                    case .resumeCheckpoint: waiting = false
                    case .removeImages, .judgeDaemonEnd, .stopBusyDaemon, .killRestoredProcesses: break
                    }
                }
            }
            if rs.phase == .restoring {
                for effect in rs.event(.preparedRestoreFailed).effects {
                    if case .discard(let p) = effect { discarded[p, default: 0] += 1 }
                }
            }
            for i in 1...max(handedIn, 1) where handedIn > 0 {
                if discarded["p\(i)"] != 1 {
                    _ = fail("p\(i) discarded \(discarded["p\(i)"] ?? 0) times")
                }
            }
            if waiting { _ = fail("a checkpoint still waits after the stop") }
        }
    }
}
