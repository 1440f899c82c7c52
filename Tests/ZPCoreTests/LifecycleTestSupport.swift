// Shared fixtures for the lifecycle tests: instants, a builder that drives a fresh state machine
// into each phase through real events, and a snapshot of everything observable.
import Testing

@testable import ZPCore

typealias LC = ContainerLifecycle

/// An instant `seconds` after the clock's origin.
func at(_ seconds: Int) -> ZPInstant { ZPInstant(nanoseconds: UInt64(seconds) * 1_000_000_000) }

/// Everything the state machine exposes, to prove that an ignored event changed nothing.
struct LifecycleSnapshot: Equatable, CustomStringConvertible {
    var phase: LC.Phase
    var pid: Int32?
    var appearsRunning: Bool
    var idleDeadline: ZPInstant?
    var redirectEnabled: Bool
    var hasCheckpointImage: Bool
    var heldConnections: Int
    var heldExecs: [String]
    var deferredSignals: [Int32]
    var runningExecs: [String]
    var checkpointingEnabled: Bool
    var scaleDownEnabled: Bool
    var exitStatus: Int32?
    var preDumpDeadline: ZPInstant?
    var preDumpInFlight: Bool
    var hasPreDumpImage: Bool
    var scaleDownWaitsForPreDump: Bool
    var preDumpEnabled: Bool
    var dryRunScaledDown: Bool

    init(_ lc: LC) {
        phase = lc.phase
        pid = lc.pid
        appearsRunning = lc.appearsRunning
        idleDeadline = lc.idleDeadline
        redirectEnabled = lc.redirectEnabled
        hasCheckpointImage = lc.hasCheckpointImage
        heldConnections = lc.heldConnections
        heldExecs = lc.heldExecs
        deferredSignals = lc.deferredSignals
        runningExecs = lc.runningExecs
        checkpointingEnabled = lc.checkpointingEnabled
        scaleDownEnabled = lc.scaleDownEnabled
        exitStatus = lc.exitStatus
        preDumpDeadline = lc.preDumpDeadline
        preDumpInFlight = lc.preDumpInFlight
        hasPreDumpImage = lc.hasPreDumpImage
        scaleDownWaitsForPreDump = lc.scaleDownWaitsForPreDump
        preDumpEnabled = lc.preDumpEnabled
        dryRunScaledDown = lc.dryRunScaledDown
    }

    var description: String {
        "\(phase) pid=\(pid.map(String.init) ?? "-") deadline=\(idleDeadline.map(String.init(describing:)) ?? "-") "
            + "held=\(heldConnections) heldExecs=\(heldExecs) execs=\(runningExecs) signals=\(deferredSignals)"
    }
}

/// Fixed values used by the fixtures and the table.
enum Fixture {
    static let pid: Int32 = 100
    static let startTime = at(1)
    /// The first idle deadline: start + 60 s.
    static let deadline = at(61)
    static let config = LC.Configuration(scaleDownDuration: .seconds(60))
    static let killConfig = LC.Configuration(scaleDownDuration: .seconds(60), checkpointingEnabled: false)

    /// A state machine driven through real events into `phase`. Restoring and cold-starting hold
    /// one connection (the one that woke them).
    static func lifecycle(in phase: LC.Phase) -> LC {
        var lc = LC(configuration: phase == .scalingDownByKill ? killConfig : config)
        func drive(_ events: [LC.Event]) {
            for e in events { _ = lc.event(e) }
        }
        let start: [LC.Event] = [.started(pid: pid, now: startTime)]
        let idle: [LC.Event] = [.idleDeadlineReached(lastActivity: nil, now: deadline)]
        switch phase {
        case .created: break
        case .running: drive(start)
        case .checkpointing, .scalingDownByKill: drive(start + idle)
        case .scaledDown: drive(start + idle + [.checkpointFinished(duration: .milliseconds(200))])
        case .restoring:
            drive(start + idle + [.checkpointFinished(duration: .milliseconds(200)), .connectionArrived])
        case .coldStarting:
            drive(
                start + idle + [
                    .checkpointFinished(duration: .milliseconds(200)), .connectionArrived,
                    .restoreFailed(reason: "restore failed"),
                ]
            )
        case .stopped: drive(start + [.processExited(pid: pid, status: 0)])
        }
        precondition(lc.phase == phase, "fixture for \(phase) reached \(lc.phase)")
        return lc
    }
}
