// The fallbacks the lifecycle decides itself: a failed incremental checkpoint is retried once as
// a plain dump, and a failed lazy restore once as a full restore from the same images.
import Testing

@testable import ZPCore

@Suite("Lifecycle: fallbacks")
struct LifecycleFallbackTests {
    @Test func incrementalCheckpointFailure_retriesOnceAsAPlainDump_thenSucceeds() {
        var lc = preDumpLifecycle(.checkpointingOnPreDump)
        #expect(
            lc.event(.checkpointFailed(reason: "parent missing", now: at(62))) == [.cleanupImages, .startCheckpoint]
        )
        #expect(lc.phase == .checkpointing)
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(80))) == [
                .emitStatus(.scaledDown, duration: .milliseconds(80), reason: nil)
            ]
        )
        #expect(lc.phase == .scaledDown && lc.checkpointingEnabled)
    }

    @Test func incrementalCheckpointFailure_keepsTheWaitersForThePlainDump() {
        var lc = preDumpLifecycle(.checkpointingOnPreDump)
        #expect(lc.event(.connectionArrived) == [.holdConnection])
        #expect(
            lc.event(.checkpointFailed(reason: "parent missing", now: at(62))) == [.cleanupImages, .startCheckpoint]
        )
        #expect(lc.heldConnections == 1)
        #expect(
            lc.event(.checkpointFinished(duration: .milliseconds(80))) == [
                .emitStatus(.scaledDown, duration: .milliseconds(80), reason: nil), .startRestore,
            ]
        )
    }

    @Test func incrementalCheckpointFailure_afterTheProcessDied_isNotRetried() {
        var lc = preDumpLifecycle(.checkpointingOnPreDump)
        #expect(lc.event(.processExited(pid: Fixture.pid, status: 137)) == [.suppressExit])
        let actions = lc.event(.checkpointFailed(reason: "process gone", now: at(62)))
        #expect(!actions.contains(.startCheckpoint))
        #expect(actions.contains(.reportExit(status: 137)))
        #expect(lc.phase == .stopped)
    }

    @Test func plainCheckpointFailure_isNotRetried() {
        var lc = Fixture.lifecycle(in: .checkpointing)
        let actions = lc.event(.checkpointFailed(reason: "dump failed", now: at(62)))
        #expect(!actions.contains(.startCheckpoint))
        #expect(lc.phase == .running && !lc.checkpointingEnabled)
    }

    @Test func lazyRestoreFailure_startsOneFullRestore_thatCanSucceed() {
        var lc = Fixture.lifecycle(in: .restoring)
        #expect(lc.event(.lazyRestoreFailed(reason: "daemon gone")) == [.startFullRestore])
        #expect(lc.phase == .restoring && lc.checkpointingEnabled && lc.heldConnections == 1)
        // A second lazy failure cannot come from the full restore: ignored.
        #expect(lc.event(.lazyRestoreFailed(reason: "again")) == [])
        let actions = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70)))
        #expect(actions.first == .releaseHeldConnections(count: 1))
        #expect(lc.phase == .running && lc.checkpointingEnabled)
    }

    @Test func fullRestoreFailure_afterALazyOne_coldStarts() {
        var lc = Fixture.lifecycle(in: .restoring)
        _ = lc.event(.lazyRestoreFailed(reason: "daemon gone"))
        #expect(
            lc.event(.restoreFailed(reason: "restore failed")) == [
                .cleanupImages, .emitStatus(.restoreFailed, duration: nil, reason: "restore failed"), .startColdStart,
            ]
        )
        #expect(lc.phase == .coldStarting && !lc.checkpointingEnabled)
    }

    @Test func aNewRestore_mayFallBackAgain() {
        var lc = Fixture.lifecycle(in: .restoring)
        _ = lc.event(.lazyRestoreFailed(reason: "daemon gone"))
        _ = lc.event(.restoreFinished(pid: 200, duration: .milliseconds(90), now: at(70)))
        _ = lc.event(.idleDeadlineReached(lastActivity: nil, now: at(130)))
        _ = lc.event(.checkpointFinished(duration: .milliseconds(50)))
        #expect(lc.event(.connectionArrived) == [.holdConnection, .startRestore])
        #expect(lc.event(.lazyRestoreFailed(reason: "daemon gone")) == [.startFullRestore])
    }

    @Test(arguments: [
        LC.Phase.created, .running, .checkpointing, .scalingDownByKill, .scaledDown, .coldStarting, .stopped,
    ])
    func lazyRestoreFailure_outsideARestore_isIgnored(phase: LC.Phase) {
        var lc = Fixture.lifecycle(in: phase)
        let before = LifecycleSnapshot(lc)
        #expect(lc.event(.lazyRestoreFailed(reason: "stray")) == [])
        #expect(LifecycleSnapshot(lc) == before)
    }
}
