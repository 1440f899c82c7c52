// The vocabulary of the lifecycle state machine: its configuration, public phases, the status
// values the original zeropod reports, the events (facts) and the actions (orders).
// docs/state-machine.md has the diagram and the full event/action table.

extension ContainerLifecycle {
    /// The per-container settings the state machine needs, taken from the parsed annotations.
    public struct Configuration: Sendable, Hashable {
        /// How long the container must see no activity before it scales down
        /// (`zeropod.ctrox.dev/scaledown-duration`, default one minute). Zero or negative disables
        /// scale-down.
        public var scaleDownDuration: Duration
        /// Whether scale-down checkpoints the process (`true`) or kills it and cold-starts it on the
        /// next connection (`false`, `zeropod.ctrox.dev/disable-checkpointing`).
        public var checkpointingEnabled: Bool
        /// Whether open connections (websockets, streams) reported at the idle deadline keep the
        /// container running, even when no packet crossed them for the whole scale-down duration.
        public var openConnectionsCountAsActivity: Bool
        /// Whether memory is pre-dumped while the container is idle (`zeropod.ctrox.dev/pre-dump`):
        /// once it has been idle for half the scale-down duration, a CRIU pre-dump copies its
        /// memory while it keeps running, and the checkpoint at the deadline writes only the pages
        /// dirtied since.
        public var preDump: Bool
        /// Whether the container belongs to a wake group (`zeropod-swift/wake-group`, decision
        /// 0011): a connection or exec that brings it back also asks the other members to come
        /// back (``Action/wakeGroup``).
        public var wakesGroup: Bool
        /// Dry run (`zeropod.ctrox.dev/dry-run`, decision 0031): the idle timer runs as usual, but
        /// at the deadline the container is only *virtually* scaled down — reported with
        /// ``Action/emitDryRun(_:)`` — and keeps running: nothing is checkpointed, killed,
        /// pre-dumped or redirected. The first traffic (or exec) after that is reported as a
        /// would-be restore, and the cycle starts over.
        public var dryRun: Bool
        /// How often a virtually scaled-down container (dry run) looks for traffic: the idle timer
        /// is re-armed this far ahead until the activity stamps show traffic newer than the
        /// virtual scale-down. Zero or negative means the default, one second (the original's).
        public var dryRunPollInterval: Duration

        /// The poll interval of a dry run when none (or a non-positive one) is given.
        public static let defaultDryRunPollInterval: Duration = .seconds(1)

        /// Creates a configuration.
        /// - Parameters:
        ///   - scaleDownDuration: idle time before scale-down; zero disables scale-down.
        ///   - checkpointingEnabled: checkpoint (`true`) or kill (`false`) on scale-down.
        ///   - openConnectionsCountAsActivity: whether open connections postpone scale-down.
        ///   - preDump: whether to pre-dump memory halfway through the idle time.
        ///   - wakesGroup: whether the container is a member of a wake group.
        ///   - dryRun: whether scale-downs and restores are only reported, never carried out.
        ///   - dryRunPollInterval: how often a virtually scaled-down container looks for traffic.
        public init(
            scaleDownDuration: Duration = .seconds(60),
            checkpointingEnabled: Bool = true,
            openConnectionsCountAsActivity: Bool = true,
            preDump: Bool = false,
            wakesGroup: Bool = false,
            dryRun: Bool = false,
            dryRunPollInterval: Duration = Configuration.defaultDryRunPollInterval
        ) {
            self.scaleDownDuration = scaleDownDuration
            self.checkpointingEnabled = checkpointingEnabled
            self.openConnectionsCountAsActivity = openConnectionsCountAsActivity
            self.preDump = preDump
            self.wakesGroup = wakesGroup
            self.dryRun = dryRun
            self.dryRunPollInterval = dryRunPollInterval
        }
    }

    /// What a dry run reports instead of acting (``Action/emitDryRun(_:)``): the status events
    /// `EVENT_WOULD_SCALE_DOWN` and `EVENT_WOULD_RESTORE` of the shim's status stream.
    public enum DryRunDecision: Sendable, Hashable {
        /// The idle deadline passed with no activity: a real container would have been scaled
        /// down now. It keeps running; the lifecycle considers it virtually scaled down.
        case wouldScaleDown
        /// The first traffic or exec after a virtual scale-down: a real container would have been
        /// restored now. The idle timer starts over.
        case wouldRestore(DryRunWake)
    }

    /// What would have brought a virtually scaled-down container back (dry run).
    public enum DryRunWake: Sendable, Hashable {
        /// The activity stamps of its ports show traffic at `at`, after the virtual scale-down
        /// (probe sources and, by default, loopback are not activity: the tracker filters them).
        case traffic(at: ZPInstant)
        /// An exec was started in the container.
        case exec(id: String)
        /// The redirect could not be set up: a scaled-down container would have been woken at once.
        case redirectLost
    }

    /// Where one container is in its life, as the shim and its users see it.
    public enum Phase: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// The container exists (runc create ran) but its process has not been started.
        case created
        /// The process runs and serves directly; the idle timer may be armed.
        case running
        /// Redirect is on and CRIU is dumping the process.
        case checkpointing
        /// Redirect is on and the process is being killed because checkpointing is off.
        case scalingDownByKill
        /// No process; redirect on; the activator answers probes and a connection wakes it.
        case scaledDown
        /// CRIU restores the process from its image; connections and execs wait.
        case restoring
        /// The container is started again from its bundle without an image; connections and
        /// execs wait.
        case coldStarting
        /// The container's process is gone for good and its exit was reported (or it never ran).
        /// Terminal.
        case stopped

        /// The upper-case name used in logs and status labels, e.g. `SCALED_DOWN`.
        public var name: String {
            switch self {
            case .created: return "CREATED"
            case .running: return "RUNNING"
            case .checkpointing: return "CHECKPOINTING"
            case .scalingDownByKill: return "SCALING_DOWN_BY_KILL"
            case .scaledDown: return "SCALED_DOWN"
            case .restoring: return "RESTORING"
            case .coldStarting: return "COLD_STARTING"
            case .stopped: return "STOPPED"
            }
        }

        /// The status the original zeropod would report for this phase (its label
        /// `status.zeropod.ctrox.dev/<container>` and `GetStatus`), or `nil` before the process
        /// started.
        ///
        /// The original knows only a scaled-down flag: a container counts as `RUNNING` until its
        /// checkpoint finished, and as `SCALED_DOWN` until its restore finished.
        public var originalStatus: StatusPhase? {
            switch self {
            case .created: return nil
            case .running, .checkpointing, .scalingDownByKill: return .running
            case .scaledDown, .restoring, .coldStarting: return .scaledDown
            case .stopped: return .stopping
            }
        }

        /// Same as ``name``.
        public var description: String { name }
    }

    /// The status values of the original zeropod's shim API (`zeropod.shim.v1` `ContainerPhase`),
    /// with its wire numbers. The last three are one-off events, not lasting phases.
    public enum StatusPhase: Int32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// The container is scaled down (checkpointed or killed).
        case scaledDown = 0
        /// The container's process runs.
        case running = 1
        /// The container is stopping or stopped for good.
        case stopping = 2
        /// A checkpoint failed; the container keeps running.
        case checkpointFailed = 3
        /// A restore or cold start failed.
        case restoreFailed = 4

        /// The original's enum name, e.g. `CHECKPOINT_FAILED`.
        public var name: String {
            switch self {
            case .scaledDown: return "SCALED_DOWN"
            case .running: return "RUNNING"
            case .stopping: return "STOPPING"
            case .checkpointFailed: return "CHECKPOINT_FAILED"
            case .restoreFailed: return "RESTORE_FAILED"
            }
        }

        /// Same as ``name``.
        public var description: String { name }
    }

    /// The answer to another member of the container's wake group that asked it to come back
    /// (``Event/groupWakeRequested``), when the container does not wait for a wake of its own. A
    /// scaled-down container holds the request like a connection instead
    /// (``Action/holdConnection``), and it is answered "woken" when the held connections are
    /// released.
    public enum GroupWakeAnswer: Sendable, Hashable, CaseIterable {
        /// The container runs (or was created and not started): nothing to wake.
        case notScaledDown
        /// A restore or cold start is already under way.
        case alreadyWaking
        /// The container stopped for good.
        case stopped
    }

    /// Something that happened to the container, reported by its driver (the shim) or by the
    /// activator. Events are facts in the past tense; the state machine answers with actions.
    public enum Event: Sendable, Hashable {
        /// The container's init process was started (task Start succeeded).
        case started(pid: Int32, now: ZPInstant)
        /// The idle timer fired. `lastActivity` is the newest activity stamp of the container's
        /// ports (nil if none was seen); `openConnections` counts connections still open to the
        /// app (long-lived streams).
        case idleDeadlineReached(lastActivity: ZPInstant?, openConnections: Int = 0, now: ZPInstant)
        /// Traffic was seen at `at` outside the eBPF tracker (e.g. a connection the activator
        /// proxied). Only recorded; it is compared at the next idle deadline.
        case activitySeen(at: ZPInstant)
        /// The redirect or the activator could not be set up; scale-down is disabled for good.
        case redirectUnavailable(reason: String)
        /// CRIU finished the dump; the image is complete.
        case checkpointFinished(duration: Duration)
        /// The dump failed. `reason` carries the tail of CRIU's log.
        case checkpointFailed(reason: String, now: ZPInstant)
        /// The activator accepted a client connection on a redirected port.
        case connectionArrived
        /// The activator recognised a kubelet probe (HTTP `kube-probe/`, TCP connect, gRPC health).
        case probeArrived
        /// CRIU restored the process; it now has `pid`.
        case restoreFinished(pid: Int32, duration: Duration, now: ZPInstant)
        /// The restore failed. `reason` carries the tail of CRIU's log.
        case restoreFailed(reason: String)
        /// A lazy restore (a prepared one whose `criu lazy-pages` daemon serves the pages) failed,
        /// or its daemon was gone before it ran; the images are intact, so a full restore from them
        /// may still succeed.
        case lazyRestoreFailed(reason: String)
        /// The container was started afresh from its bundle; its process has `pid`.
        case coldStartFinished(pid: Int32, now: ZPInstant)
        /// The cold start failed.
        case coldStartFailed(reason: String)
        /// containerd asked to start the exec process `id` in the container.
        case execStarted(id: String)
        /// The exec process `id` exited or was deleted (or was cancelled while it waited).
        case execEnded(id: String, now: ZPInstant)
        /// containerd asked to send `signal` to the container's init process.
        case killRequested(signal: Int32)
        /// The reaper saw process `pid` exit with `status` (the containerd exit status, e.g. 137
        /// for SIGKILL). The driver must report a restored process's `restoreFinished` before
        /// that process's exit.
        case processExited(pid: Int32, status: Int32)
        /// containerd asked to delete the container's init process.
        case deleteRequested
        /// The pre-dump timer fired (see ``ContainerLifecycle/preDumpDeadline``). `lastActivity`
        /// and `openConnections` as for ``idleDeadlineReached(lastActivity:openConnections:now:)``.
        case preDumpDeadlineReached(lastActivity: ZPInstant?, openConnections: Int = 0, now: ZPInstant)
        /// CRIU finished the pre-dump; its image can be the parent of the checkpoint.
        case preDumpFinished
        /// The pre-dump failed or is not supported here (no dirty-memory tracking). `reason` says
        /// why. Pre-dumps stay off for this container; checkpoints are plain ones.
        case preDumpFailed(reason: String)
        /// Another member of the container's wake group asked it to come back, as if a connection
        /// came, but without waking the group again.
        case groupWakeRequested

        /// The event's case without its values.
        public var kind: Kind {
            switch self {
            case .started: return .started
            case .idleDeadlineReached: return .idleDeadlineReached
            case .activitySeen: return .activitySeen
            case .redirectUnavailable: return .redirectUnavailable
            case .checkpointFinished: return .checkpointFinished
            case .checkpointFailed: return .checkpointFailed
            case .connectionArrived: return .connectionArrived
            case .probeArrived: return .probeArrived
            case .restoreFinished: return .restoreFinished
            case .restoreFailed: return .restoreFailed
            case .lazyRestoreFailed: return .lazyRestoreFailed
            case .coldStartFinished: return .coldStartFinished
            case .coldStartFailed: return .coldStartFailed
            case .execStarted: return .execStarted
            case .execEnded: return .execEnded
            case .killRequested: return .killRequested
            case .processExited: return .processExited
            case .deleteRequested: return .deleteRequested
            case .preDumpDeadlineReached: return .preDumpDeadlineReached
            case .preDumpFinished: return .preDumpFinished
            case .preDumpFailed: return .preDumpFailed
            case .groupWakeRequested: return .groupWakeRequested
            }
        }

        /// The cases of ``Event`` without values, for tables, logs and metrics.
        public enum Kind: String, Sendable, Hashable, CaseIterable {
            /// ``Event/started(pid:now:)``.
            case started
            /// ``Event/idleDeadlineReached(lastActivity:openConnections:now:)``.
            case idleDeadlineReached
            /// ``Event/activitySeen(at:)``.
            case activitySeen
            /// ``Event/redirectUnavailable(reason:)``.
            case redirectUnavailable
            /// ``Event/checkpointFinished(duration:)``.
            case checkpointFinished
            /// ``Event/checkpointFailed(reason:now:)``.
            case checkpointFailed
            /// ``Event/connectionArrived``.
            case connectionArrived
            /// ``Event/probeArrived``.
            case probeArrived
            /// ``Event/restoreFinished(pid:duration:now:)``.
            case restoreFinished
            /// ``Event/restoreFailed(reason:)``.
            case restoreFailed
            /// ``Event/lazyRestoreFailed(reason:)``.
            case lazyRestoreFailed
            /// ``Event/coldStartFinished(pid:now:)``.
            case coldStartFinished
            /// ``Event/coldStartFailed(reason:)``.
            case coldStartFailed
            /// ``Event/execStarted(id:)``.
            case execStarted
            /// ``Event/execEnded(id:now:)``.
            case execEnded
            /// ``Event/killRequested(signal:)``.
            case killRequested
            /// ``Event/processExited(pid:status:)``.
            case processExited
            /// ``Event/deleteRequested``.
            case deleteRequested
            /// ``Event/preDumpDeadlineReached(lastActivity:openConnections:now:)``.
            case preDumpDeadlineReached
            /// ``Event/preDumpFinished``.
            case preDumpFinished
            /// ``Event/preDumpFailed(reason:)``.
            case preDumpFailed
            /// ``Event/groupWakeRequested``.
            case groupWakeRequested
        }
    }

    /// An order for the driver. ``ContainerLifecycle/event(_:)`` returns them as a list, to be
    /// carried out in order after the state change (outside any lock). An empty list means
    /// "nothing to do".
    public enum Action: Sendable, Hashable {
        /// Arm (or re-arm, replacing any earlier) the idle timer to fire at `deadline`; report
        /// `idleDeadlineReached` when it fires. Also drops a pre-dump timer armed with the earlier
        /// idle timer: when a pre-dump is still due, `armPreDumpTimer` follows.
        case armIdleTimer(deadline: ZPInstant)
        /// Cancel the armed idle timer, and the pre-dump timer armed with it.
        case cancelIdleTimer
        /// Arm (or re-arm) the pre-dump timer to fire at `deadline` (before the idle deadline);
        /// report `preDumpDeadlineReached` when it fires. It is spent when it fires, and dropped
        /// with the idle timer (`armIdleTimer`, `cancelIdleTimer`, or the idle timer firing).
        case armPreDumpTimer(deadline: ZPInstant)
        /// Steer new connections on the container's ports to the activator.
        case enableRedirect
        /// Let new connections reach the app directly again.
        case disableRedirect
        /// Start a CRIU dump of the process; report `checkpointFinished` or `checkpointFailed`.
        /// (Also the second attempt after an incremental checkpoint failed: `cleanupImages` comes
        /// first then, so the dump has no parent.)
        case startCheckpoint
        /// Start a CRIU dump of the process on top of the pre-dump image (its parent, with memory
        /// tracking): only pages dirtied since the pre-dump are written. Report
        /// `checkpointFinished` or `checkpointFailed`; the restore reads both images.
        case startIncrementalCheckpoint
        /// Start a CRIU pre-dump of the running process (it keeps running and serving; CRIU
        /// freezes it only while it collects its memory), replacing any earlier pre-dump image.
        /// Report `preDumpFinished` or `preDumpFailed`.
        case startPreDump
        /// Kill the process to scale down (checkpointing is off); report its `processExited`.
        case startScaleDownKill
        /// Start a CRIU restore from the image (the one prepared while scaled down, if any);
        /// report `restoreFinished`, or `lazyRestoreFailed` when a lazy one failed, or
        /// `restoreFailed`.
        case startRestore
        /// Start a full CRIU restore from the image with a worker of its own, after a lazy restore
        /// failed; report `restoreFinished` or `restoreFailed`.
        case startFullRestore
        /// Start the container afresh from its bundle; report `coldStartFinished` or
        /// `coldStartFailed`.
        case startColdStart
        /// Keep the connection just accepted open and unanswered until a release or fail order.
        case holdConnection
        /// Proxy the connection just accepted to the app now (it runs).
        case forwardConnection
        /// Close the connection just accepted: the container is not running and will not wake.
        case refuseConnection
        /// Proxy all `count` held connections to the app, which now runs.
        case releaseHeldConnections(count: Int)
        /// Close all `count` held connections: the app will not come back.
        case failHeldConnections(count: Int)
        /// Answer the probe just accepted from the activator, without waking the app.
        case answerProbe
        /// Answer the wake group member that asked the container to come back (the container
        /// does not wait for a wake of its own).
        case answerGroupWake(GroupWakeAnswer)
        /// Ask the other members of the container's wake group to come back. Carry it out at once,
        /// not behind the operations queued before it: the members' restores run beside this one.
        case wakeGroup
        /// Start the exec process `id` now.
        case startExec(id: String)
        /// Keep the exec `id` waiting until a start-held or fail-held order.
        case holdExec(id: String)
        /// Start the waiting exec processes `ids`, in order.
        case startHeldExecs(ids: [String])
        /// Fail the waiting exec processes `ids`: the container will not come back.
        case failHeldExecs(ids: [String])
        /// Refuse the exec `id`: the container does not run.
        case rejectExec(id: String)
        /// Remember that `signal` waits for the operation in flight; it is delivered (or turned
        /// into a stop) when the operation ends. The kill request itself succeeds.
        case deferSignal(signal: Int32)
        /// Publish a status change (log, label, Kubernetes event, metrics). `duration` is the
        /// checkpoint or restore time when there is one; `reason` explains a failure.
        case emitStatus(StatusPhase, duration: Duration?, reason: String?)
        /// Do not publish this process exit: it is the checkpointed (or scale-down-killed) process.
        case suppressExit
        /// Publish the container's exit with `status` (TaskExit, Wait answers).
        case reportExit(status: Int32)
        /// Send `signal` to the container's init process (runc kill).
        case signalProcess(signal: Int32)
        /// Delete the checkpoint image and work files.
        case cleanupImages
        /// Delete everything the container left: images, redirect maps and pins, activator sockets.
        case cleanupAll
        /// Dry run: publish what would have happened (log, status event, the manager's event and
        /// counter). Nothing else is done: the process keeps running, the redirect stays off.
        case emitDryRun(DryRunDecision)
    }
}
