// The restore side of one container as a pure value-type state machine (decision 0009 and 0017):
// the restore prepared while the container is scaled down, and after a lazy restore the
// `criu lazy-pages` daemon that still pushes pages into the running process, judged when it ends.
// No I/O: the driver reports facts and carries out the returned effects; the preparation itself is
// an opaque value of the driver's (`Preparation`).

/// The restore side of one container: a restore prepared ahead of time (CRIU worker, mounts, and
/// for a lazy restore the `criu lazy-pages` daemon) and, after a lazy restore, the daemon that still
/// serves pages until it ends.
///
/// Phases: **idle**, **prepared** (a preparation waits for the restore), **restoring** (the
/// prepared restore runs), **serving** (after a lazy restore: the daemon pushes the remaining
/// pages; the images must stay), **settling** (the daemon ended; the driver finds out how).
///
/// What it decides:
/// - every preparation is discarded exactly once (used, replaced, obsolete, deleted or stopped);
/// - the images are removed only when no daemon still reads them (a removal asked meanwhile is
///   deferred until the daemon's end was judged);
/// - a checkpoint waits while a daemon serves or is judged (the process must have all its pages
///   before it is dumped); a daemon still busy after `busyLimit` is stopped, which counts as an
///   early end;
/// - a daemon that makes no progress (the driver's progress figure, e.g. the bytes it read and
///   wrote, stays the same) for `stallLimit` while it serves is hung: stopped, which counts as an
///   early end, whether or not a checkpoint waits (the restored process waits on its missing pages
///   meanwhile, and traffic would keep a checkpoint from ever being asked for);
/// - the container's processes are killed before a hung or busy daemon is stopped: once the daemon
///   is gone, a missing page is filled with zeros when the process touches it;
/// - a daemon that ended before it served every page leaves the process without the pages it
///   still lacked (the driver holds the daemon's userfaultfds, decision 0069, so the process waits
///   on them instead of getting zero pages): the container's processes are killed (unless the
///   driver stopped) before the preparation is discarded, and a checkpoint asked for afterwards is
///   refused with that reason.
///
/// ```swift
/// let step = state.withLock { $0.restoreSide.event(.checkpointRequested(now: clock.now())) }
/// switch step.answer { case .checkpoint(.waitForDaemon): … }   // answered under the lock
/// for effect in step.effects { await perform(effect) }           // after it
/// ```
public struct RestoreSupervision<Preparation: Sendable>: Sendable {
    /// A preparation's number, issued when it is handed in: how events name it.
    public struct Ticket: Sendable, Hashable, CustomStringConvertible {
        /// The number, unique within one supervision.
        public let number: UInt64
        /// `#<number>`.
        public var description: String { "#\(number)" }
    }

    /// Something that happened on the restore side.
    public enum Event: Sendable {
        /// A restore was prepared (after a checkpoint, while scaled down).
        case restorePrepared(Preparation)
        /// The lifecycle ordered a restore (`startRestore`): answered with the preparation to run,
        /// if any.
        case restoreStarted
        /// The prepared restore ran. `lazyDaemon` names the `criu lazy-pages` daemon that still
        /// serves pages (e.g. `criu lazy-pages (pid 812)`), nil for a full restore.
        case preparedRestoreFinished(lazyDaemon: String?)
        /// The prepared restore failed (the preparation is used up).
        case preparedRestoreFailed
        /// The lifecycle ordered `cleanupImages`: the checkpoint images are of no further use.
        case imagesObsolete
        /// The lifecycle ordered `cleanupAll` (the container is deleted): everything goes.
        case containerDeleted
        /// The driver stopped: everything still held goes, nothing is killed any more.
        case driverStopped
        /// A checkpoint or pre-dump is about to start: answered with whether it may.
        case checkpointRequested(now: ZPInstant)
        /// The driver looked at the serving daemon of `ticket` at `now`: it `exited` or still runs;
        /// `progress` is a figure that grows while the daemon works (nil when unknown: no hang is
        /// detected then).
        case daemonObserved(Ticket, exited: Bool, progress: UInt64? = nil, now: ZPInstant)
        /// How the daemon of `ticket` ended: `clean` when it served every page; `how` says how
        /// that is known (exit status, signal, CRIU's log).
        case daemonJudged(Ticket, clean: Bool, how: String)
    }

    /// Whether a checkpoint may start.
    public enum Clearance: Sendable, Hashable {
        /// Nothing is in the way.
        case clear
        /// The restored process is not trusted (its daemon ended early and it was killed): the
        /// checkpoint fails with `reason` instead of dumping a dying process.
        case refused(reason: String)
        /// A daemon still serves pages or is judged: wait for ``Effect/resumeCheckpoint(refusal:)``.
        case waitForDaemon
    }

    /// The answer to the caller of an event, given under the driver's lock.
    public enum Answer: Sendable {
        /// Nothing to answer.
        case none
        /// Restore with this preparation (``Event/restoreStarted``); report its outcome.
        case runPrepared(Preparation)
        /// Nothing is prepared: restore with a worker of its own.
        case runWithoutPreparation
        /// Whether the checkpoint may start (``Event/checkpointRequested(now:)``).
        case checkpoint(Clearance)
    }

    /// What the driver carries out after releasing its lock, in order.
    public enum Effect: Sendable {
        /// Release what the preparation still holds (worker, descriptors, mounts; a daemon still
        /// running is stopped). Emitted exactly once per preparation.
        case discard(Preparation)
        /// Remove the checkpoint images.
        case removeImages
        /// Find out how the daemon of `ticket` ended and report ``Event/daemonJudged(_:clean:how:)``.
        case judgeDaemonEnd(Ticket, Preparation)
        /// Stop the daemon of this preparation: a checkpoint waited for it longer than the limit,
        /// or it made no progress for the stall limit (after ``killRestoredProcesses(reason:)``).
        case stopBusyDaemon(Preparation)
        /// Kill the container's processes: the restored process lacks pages it can no longer get
        /// (it waits on them while the driver holds the daemon's userfaultfds; zero pages without).
        /// `reason` names the daemon, how it ended and the container (log it, publish a failed
        /// restore).
        case killRestoredProcesses(reason: String)
        /// The checkpoint that waited goes on (`refusal` nil) or fails with `refusal`.
        case resumeCheckpoint(refusal: String?)
    }

    /// One event as the driver carries it out.
    public struct Step: Sendable {
        /// The caller's answer.
        public var answer: Answer
        /// The effects, in order.
        public var effects: [Effect]
    }

    /// The phases, for logs and tests.
    public enum Phase: String, Sendable, Hashable, CaseIterable {
        /// Nothing prepared, no daemon.
        case idle
        /// A preparation waits for the restore.
        case prepared
        /// The prepared restore runs.
        case restoring
        /// After a lazy restore: the daemon serves the remaining pages.
        case serving
        /// The daemon ended; the driver finds out how.
        case settling
    }

    private struct Held: Sendable {
        var ticket: Ticket
        var preparation: Preparation
    }

    private enum State: Sendable {
        case idle
        case prepared(Held)
        case restoring(Held)
        case serving(Held, daemon: String)
        case settling(Held, daemon: String)
    }

    /// The container, for the reason of a kill.
    public let containerID: String
    /// How long a checkpoint waits for a busy daemon before it is stopped.
    public let busyLimit: Duration
    /// How long a serving daemon may make no progress before it is taken for hung and stopped.
    public let stallLimit: Duration

    private var state = State.idle
    private var nextTicket: UInt64 = 1
    private var stopped = false
    private var imagesDeferred = false
    private var untrusted: String?
    private var checkpointWaits = false
    private var busyDeadline: ZPInstant?
    /// The serving daemon's last progress figure and when it was first seen.
    private var lastProgress: (value: UInt64, since: ZPInstant)?

    /// A supervision with nothing prepared.
    /// - Parameters:
    ///   - containerID: the container, named in the reason of a kill.
    ///   - busyLimit: how long a checkpoint waits for a daemon that still serves pages (60 s).
    ///   - stallLimit: how long a serving daemon may make no progress (10 s).
    public init(containerID: String, busyLimit: Duration = .seconds(60), stallLimit: Duration = .seconds(10)) {
        self.containerID = containerID
        self.busyLimit = busyLimit
        self.stallLimit = stallLimit
    }

    // MARK: queries

    /// The current phase.
    public var phase: Phase {
        switch state {
        case .idle: return .idle
        case .prepared: return .prepared
        case .restoring: return .restoring
        case .serving: return .serving
        case .settling: return .settling
        }
    }

    /// The preparation whose daemon serves pages now, with its ticket: the driver watches it.
    public var serving: (ticket: Ticket, preparation: Preparation)? {
        switch state {
        case .serving(let held, _): return (held.ticket, held.preparation)
        case .idle, .prepared, .restoring, .settling: return nil
        }
    }

    /// Whether a preparation waits for the restore.
    public var hasPreparation: Bool {
        switch state {
        case .prepared: return true
        case .idle, .restoring, .serving, .settling: return false
        }
    }

    /// Whether a checkpoint waits for the daemon.
    public var checkpointWaitsForDaemon: Bool { checkpointWaits }

    /// Why the restored process is not trusted (its daemon ended early), if it is not.
    public var untrustedReason: String? { untrusted }

    /// Whether removing the images waits for the daemon's end.
    public var imageRemovalDeferred: Bool { imagesDeferred }

    /// Whether the driver stopped.
    public var isStopped: Bool { stopped }

    // MARK: events

    /// Applies one event.
    /// - Parameter event: what happened.
    /// - Returns: the caller's answer and the effects, in order.
    public mutating func event(_ event: Event) -> Step {
        switch event {
        case .restorePrepared(let preparation): return restorePrepared(preparation)
        case .restoreStarted: return restoreStarted()
        case .preparedRestoreFinished(let daemon): return preparedRestoreFinished(lazyDaemon: daemon)
        case .preparedRestoreFailed: return preparedRestoreFailed()
        case .imagesObsolete: return imagesObsolete()
        case .containerDeleted: return releaseAll(removingImages: true)
        case .driverStopped:
            stopped = true
            return releaseAll(removingImages: false)
        case .checkpointRequested(let now): return checkpointRequested(now: now)
        case .daemonObserved(let ticket, let exited, let progress, let now):
            return daemonObserved(ticket, exited: exited, progress: progress, now: now)
        case .daemonJudged(let ticket, let clean, let how): return daemonJudged(ticket, clean: clean, how: how)
        }
    }

    private mutating func restorePrepared(_ preparation: Preparation) -> Step {
        let held = Held(ticket: Ticket(number: nextTicket), preparation: preparation)
        nextTicket += 1
        if stopped { return Step(answer: .none, effects: [.discard(preparation)]) }
        switch state {
        case .idle:
            state = .prepared(held)
            return Step(answer: .none, effects: [])
        case .prepared(let old):
            state = .prepared(held)
            return Step(answer: .none, effects: [.discard(old.preparation)])
        case .restoring, .serving, .settling:
            // Only prepared while scaled down, which none of these is: of no use.
            return Step(answer: .none, effects: [.discard(preparation)])
        }
    }

    private mutating func restoreStarted() -> Step {
        switch state {
        case .prepared(let held):
            state = .restoring(held)
            return Step(answer: .runPrepared(held.preparation), effects: [])
        case .idle, .restoring, .serving, .settling:
            return Step(answer: .runWithoutPreparation, effects: [])
        }
    }

    private mutating func preparedRestoreFinished(lazyDaemon: String?) -> Step {
        switch state {
        case .restoring(let held):
            if let lazyDaemon, !stopped {
                // The daemon pushes the remaining pages now; the images stay until it ends.
                state = .serving(held, daemon: lazyDaemon)
                untrusted = nil
                lastProgress = nil
                return Step(answer: .none, effects: [])
            }
            state = .idle
            return Step(answer: .none, effects: [.discard(held.preparation)] + deferredRemoval())
        case .idle, .prepared, .serving, .settling:
            return Step(answer: .none, effects: [])
        }
    }

    private mutating func preparedRestoreFailed() -> Step {
        switch state {
        case .restoring(let held):
            state = .idle
            return Step(answer: .none, effects: [.discard(held.preparation)] + deferredRemoval())
        case .idle, .prepared, .serving, .settling:
            return Step(answer: .none, effects: [])
        }
    }

    private mutating func imagesObsolete() -> Step {
        switch state {
        case .idle:
            return Step(answer: .none, effects: [.removeImages])
        case .prepared(let held):
            state = .idle
            return Step(answer: .none, effects: [.discard(held.preparation), .removeImages])
        case .restoring, .serving, .settling:
            // A daemon may still read them: removed once its end was judged.
            imagesDeferred = true
            return Step(answer: .none, effects: [])
        }
    }

    /// Delete or stop: discards what is prepared or serving (a daemon the shim stops itself is
    /// not judged); a judgement under way finishes and discards its own.
    private mutating func releaseAll(removingImages: Bool) -> Step {
        var effects: [Effect] = []
        switch state {
        case .idle, .restoring, .settling:
            break
        case .prepared(let held), .serving(let held, _):
            effects.append(.discard(held.preparation))
            state = .idle
            effects += resumedCheckpoint()
        }
        switch state {
        case .idle, .prepared, .serving:
            imagesDeferred = false
            if removingImages { effects.append(.removeImages) }
        case .restoring, .settling:
            if removingImages { imagesDeferred = true }
        }
        return Step(answer: .none, effects: effects)
    }

    private mutating func checkpointRequested(now: ZPInstant) -> Step {
        switch state {
        case .serving:
            if !checkpointWaits { busyDeadline = now.advanced(by: busyLimit) }
            checkpointWaits = true
            return Step(answer: .checkpoint(.waitForDaemon), effects: [])
        case .settling:
            checkpointWaits = true
            return Step(answer: .checkpoint(.waitForDaemon), effects: [])
        case .idle, .prepared, .restoring:
            if let untrusted { return Step(answer: .checkpoint(.refused(reason: untrusted)), effects: []) }
            return Step(answer: .checkpoint(.clear), effects: [])
        }
    }

    private mutating func daemonObserved(
        _ ticket: Ticket,
        exited: Bool,
        progress: UInt64?,
        now: ZPInstant
    ) -> Step {
        guard case .serving(let held, let daemon) = state, held.ticket == ticket else {
            return Step(answer: .none, effects: [])
        }
        if exited {
            state = .settling(held, daemon: daemon)
            return Step(answer: .none, effects: [.judgeDaemonEnd(held.ticket, held.preparation)])
        }
        if let progress {
            if let last = lastProgress, last.value == progress {
                if now >= last.since.advanced(by: stallLimit) {
                    // Hung: the restored process waits on pages that will not come.
                    state = .settling(held, daemon: daemon)
                    return stopDaemon(
                        held,
                        how: "no progress for \(Self.seconds(stallLimit)) s (hung), killed by the shim"
                    )
                }
            } else {
                lastProgress = (progress, now)
            }
        }
        guard checkpointWaits, let deadline = busyDeadline, now >= deadline else {
            return Step(answer: .none, effects: [])
        }
        // The process must have every page before it is dumped; the daemon did not finish in time.
        state = .settling(held, daemon: daemon)
        return stopDaemon(held, how: "still busy after \(Self.seconds(busyLimit)) s, killed by the shim")
    }

    /// Judges the daemon of `held` (settling now) as ended early for `how` and stops it, after the
    /// container's processes were killed (unless the driver stopped): with the daemon gone, a
    /// missing page would be filled with zeros.
    private mutating func stopDaemon(_ held: Held, how: String) -> Step {
        var effects = daemonJudged(held.ticket, clean: false, how: how).effects
        let stop = Effect.stopBusyDaemon(held.preparation)
        if let kill = effects.firstIndex(where: {
            if case .killRestoredProcesses = $0 { return true } else { return false }
        }) {
            effects.insert(stop, at: kill + 1)
        } else {
            effects.insert(stop, at: 0)
        }
        return Step(answer: .none, effects: effects)
    }

    private mutating func daemonJudged(_ ticket: Ticket, clean: Bool, how: String) -> Step {
        guard case .settling(let held, let daemon) = state, held.ticket == ticket else {
            return Step(answer: .none, effects: [])
        }
        var effects: [Effect] = []
        if !clean && !stopped {
            let reason =
                "\(daemon) ended before serving every page (\(how)): "
                + "the restored process of container \(containerID) lacks pages it can no longer get"
            untrusted = reason
            effects.append(.killRestoredProcesses(reason: reason))
        }
        effects.append(.discard(held.preparation))
        state = .idle
        lastProgress = nil
        effects += deferredRemoval()
        effects += resumedCheckpoint()
        return Step(answer: .none, effects: effects)
    }

    // MARK: helpers

    /// `[.removeImages]` when a removal waited for the daemon.
    private mutating func deferredRemoval() -> [Effect] {
        guard imagesDeferred else { return [] }
        imagesDeferred = false
        return [.removeImages]
    }

    /// Resumes a checkpoint that waited for the daemon (with the refusal, if the process is not
    /// trusted).
    private mutating func resumedCheckpoint() -> [Effect] {
        guard checkpointWaits else { return [] }
        checkpointWaits = false
        busyDeadline = nil
        return [.resumeCheckpoint(refusal: untrusted)]
    }

    private static func seconds(_ d: Duration) -> Int64 { d.components.seconds }
}

extension RestoreSupervision.Event: Equatable where Preparation: Equatable {}
extension RestoreSupervision.Answer: Equatable where Preparation: Equatable {}
extension RestoreSupervision.Effect: Equatable where Preparation: Equatable {}
extension RestoreSupervision.Step: Equatable where Preparation: Equatable {}
