// The pre-dump sub-machine of RUNNING (`zeropod.ctrox.dev/pre-dump`, decision 0010): when a
// pre-dump is due, whether one runs, and whether the checkpoint at the idle deadline waits for it
// or builds on its image. Pure; `ContainerLifecycle` owns one per running process and asks it at
// the points where its own transitions touch pre-dumps.

extension ContainerLifecycle {
    /// The pre-dump of one running process: its deadline, its image and whether the checkpoint at
    /// the idle deadline waits for it.
    ///
    /// The phase stays RUNNING throughout (docs/state-machine.md, "Pre-dump sub-states"):
    /// - **armed**: ``deadline`` is set, half the scale-down duration before the idle deadline;
    /// - **pre-dumping**: ``image`` is `.inFlight`;
    /// - **waiting**: the idle deadline passed during the pre-dump (``checkpointWaits``);
    /// - **pre-dumped**: ``image`` is `.ready`, the next checkpoint is incremental.
    ///
    /// The caller decides whether a pre-dump is allowed at all (pre-dumps, checkpointing and
    /// scale-down on, no exec pinning the process) and passes that in as `allowed`.
    struct PreDumpCycle: Sendable {
        /// The pre-dump image of the process.
        enum Image: Sendable {
            /// No image.
            case none
            /// CRIU is pre-dumping; the copy reflects memory as of `startedAt` (or a little later).
            case inFlight(startedAt: ZPInstant)
            /// A complete image of memory as of `takenAt`: the parent of the next checkpoint.
            case ready(takenAt: ZPInstant)
        }

        /// How the checkpoint at the idle deadline starts.
        enum CheckpointStart: Sendable {
            /// A pre-dump runs: the checkpoint waits for it (the process keeps serving).
            case waitForPreDump
            /// On top of the pre-dump image: only pages dirtied since are written.
            case incremental
            /// A plain dump.
            case plain
        }

        /// What a pre-dump completion means for the process.
        enum Completion: Sendable {
            /// No pre-dump was in flight: a stray completion, nothing changes.
            case ignored
            /// The process keeps running.
            case keepRunning
            /// The idle deadline passed during the pre-dump: checkpoint now.
            case checkpoint(incremental: Bool)
        }

        /// The pre-dump image.
        var image: Image = .none
        /// When the next pre-dump is due; set only while the idle timer is armed, and earlier.
        var deadline: ZPInstant? = nil
        /// The idle deadline passed while a pre-dump ran: the checkpoint starts when it ends.
        var checkpointWaits = false

        /// Whether a pre-dump runs now.
        var inFlight: Bool {
            switch image {
            case .inFlight: return true
            case .none, .ready: return false
            }
        }

        /// Whether a finished image exists (the next checkpoint is incremental).
        var hasImage: Bool {
            switch image {
            case .ready: return true
            case .none, .inFlight: return false
            }
        }

        /// Whether the process should get a (new) pre-dump: `allowed`, none in flight, and no
        /// image newer than the last activity.
        func wanted(allowed: Bool, lastActivity: ZPInstant?) -> Bool {
            guard allowed else { return false }
            switch image {
            case .none: return true
            case .inFlight: return false
            case .ready(let takenAt): return lastActivity.map { $0 > takenAt } ?? false
            }
        }

        /// The idle timer was (re)armed for `idleDeadline`: the pre-dump deadline follows it, half
        /// the window earlier. Returns `[.startPreDump]` when that moment is not after `now` (idle
        /// long enough already), `[.armPreDumpTimer]` when it is later, `[]` when no pre-dump is
        /// wanted. The caller emits `armIdleTimer` before these.
        mutating func idleTimerArmed(
            idleDeadline: ZPInstant,
            now: ZPInstant,
            halfWindow: Duration,
            allowed: Bool,
            lastActivity: ZPInstant?
        ) -> [Action] {
            deadline = nil
            guard wanted(allowed: allowed, lastActivity: lastActivity) else { return [] }
            let due = idleDeadline.advanced(by: .zero - halfWindow)
            if due <= now {
                image = .inFlight(startedAt: now)
                return [.startPreDump]
            }
            deadline = due
            return [.armPreDumpTimer(deadline: due)]
        }

        /// An exec pins the process, or scale-down was turned off: no pre-dump is due and no
        /// checkpoint waits. A pre-dump in flight runs on; its image stays.
        mutating func pinned() {
            deadline = nil
            checkpointWaits = false
        }

        /// The idle deadline passed and the container is idle: how the checkpoint starts. When a
        /// pre-dump runs, the checkpoint waits for it (no deadline is armed meanwhile).
        mutating func idleDeadlinePassed() -> CheckpointStart {
            switch image {
            case .inFlight:
                deadline = nil
                checkpointWaits = true
                return .waitForPreDump
            case .ready: return .incremental
            case .none: return .plain
            }
        }

        /// The pre-dump timer fired at `now`. Postpones the pre-dump when the process was active
        /// in the last half window (or has open connections that count), else starts it.
        /// - Parameters:
        ///   - idleDeadline: the armed idle deadline; nil when none is armed (the firing is stale).
        ///   - openConnectionsCount: open connections were reported and they count as activity.
        /// - Returns: `[.startPreDump]`, `[.armPreDumpTimer]` for a postponed one, or `[]`.
        mutating func deadlineReached(
            now: ZPInstant,
            idleDeadline: ZPInstant?,
            halfWindow: Duration,
            openConnectionsCount: Bool,
            lastActivity: ZPInstant?,
            allowed: Bool
        ) -> [Action] {
            // Not armed, or a stale firing of a re-armed deadline.
            guard let due = deadline, now >= due, let idle = idleDeadline else { return [] }
            deadline = nil
            var later: ZPInstant?
            if openConnectionsCount {
                later = now.advanced(by: halfWindow)
            } else if let last = lastActivity, last.advanced(by: halfWindow) > now {
                later = last.advanced(by: halfWindow)
            }
            if let later {
                // Not idle for half the window yet: try again later, if still before the idle
                // deadline (which re-arms the pre-dump itself when it finds activity).
                guard later < idle else { return [] }
                deadline = later
                return [.armPreDumpTimer(deadline: later)]
            }
            guard wanted(allowed: allowed, lastActivity: lastActivity) else { return [] }
            image = .inFlight(startedAt: now)
            return [.startPreDump]
        }

        /// CRIU finished the pre-dump: its image is ready (as of the moment it started).
        mutating func finished() -> Completion {
            guard case .inFlight(let startedAt) = image else { return .ignored }
            image = .ready(takenAt: startedAt)
            return checkpointWaits ? .checkpoint(incremental: true) : .keepRunning
        }

        /// The pre-dump failed: no image. (The caller turns pre-dumps off for good.)
        mutating func failed() -> Completion {
            guard case .inFlight = image else { return .ignored }
            image = .none
            deadline = nil
            return checkpointWaits ? .checkpoint(incremental: false) : .keepRunning
        }
    }
}
