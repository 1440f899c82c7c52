// What the driver may ask the lifecycle between events: the phase and the values that go with it.
// Read-only views of `ContainerLifecycle`'s state; every switch names every state.

extension ContainerLifecycle {
    /// The current phase.
    public var phase: Phase {
        switch state {
        case .created: return .created
        case .running: return .running
        case .scalingDown(let s):
            switch s.method {
            case .checkpoint: return .checkpointing
            case .kill: return .scalingDownByKill
            }
        case .scaledDown: return .scaledDown
        case .waking(let w):
            switch w.method {
            case .restore: return .restoring
            case .coldStart: return .coldStarting
            }
        case .stopped: return .stopped
        }
    }

    /// The pid to show containerd (`State`, `Pids`): the running init, or the last one while the
    /// container is scaled down or waking. `nil` before the first start.
    public var pid: Int32? { lastPid }

    /// Whether containerd and the kubelet should see the task as running: true from start until
    /// the exit is reported, including while scaled down.
    public var appearsRunning: Bool {
        switch state {
        case .running, .scalingDown, .scaledDown, .waking: return true
        case .created, .stopped: return false
        }
    }

    /// The deadline of the armed idle timer, or `nil` when none is armed. While a dry run is
    /// virtually scaled down (``dryRunScaledDown``) it is the next poll for traffic.
    public var idleDeadline: ZPInstant? {
        switch state {
        case .running(let r): return r.idleDeadline
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return nil
        }
    }

    /// When the driver should report `preDumpDeadlineReached`, or `nil` when no pre-dump is due.
    /// Armed together with the idle timer (always before its deadline) when pre-dumps are on and
    /// the process has no pre-dump image newer than its last activity.
    public var preDumpDeadline: ZPInstant? {
        switch state {
        case .running(let r): return r.preDump.deadline
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return nil
        }
    }

    /// Whether a pre-dump ordered by `startPreDump` has not reported back yet.
    public var preDumpInFlight: Bool {
        switch state {
        case .running(let r): return r.preDump.inFlight
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return false
        }
    }

    /// Whether a finished pre-dump image of the running process exists (the next checkpoint is
    /// incremental).
    public var hasPreDumpImage: Bool {
        switch state {
        case .running(let r): return r.preDump.hasImage
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return false
        }
    }

    /// Whether the idle deadline passed during a pre-dump: the checkpoint starts when it ends.
    public var scaleDownWaitsForPreDump: Bool {
        switch state {
        case .running(let r): return r.preDump.checkpointWaits
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return false
        }
    }

    /// Whether pre-dumps are on: configured, and none has failed. (They also need checkpointing
    /// and scale-down to be on.)
    public var preDumpEnabled: Bool { preDumpAllowed }

    /// Dry run: whether the container is virtually scaled down — `wouldScaleDown` was reported and
    /// no traffic or exec has been seen since. The process runs all the while (phase RUNNING).
    public var dryRunScaledDown: Bool {
        switch state {
        case .running(let r): return r.dryRunScaledDownSince != nil
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return false
        }
    }

    /// Whether the redirect to the activator should be on in this phase.
    public var redirectEnabled: Bool {
        switch state {
        case .scalingDown, .scaledDown, .waking: return true
        case .created, .running, .stopped: return false
        }
    }

    /// Whether a checkpoint image exists that a restore would read.
    public var hasCheckpointImage: Bool {
        switch state {
        case .scaledDown(let s):
            switch s.method {
            case .checkpoint: return true
            case .kill: return false
            }
        case .waking(let w):
            switch w.method {
            case .restore: return true
            case .coldStart: return false
            }
        case .created, .running, .scalingDown, .stopped: return false
        }
    }

    /// The number of connections held until the container runs again.
    public var heldConnections: Int { waiters?.connections ?? 0 }

    /// The exec processes waiting for the container to run again, in arrival order.
    public var heldExecs: [String] { waiters?.execs ?? [] }

    /// The signals deferred until the operation in flight ends, in arrival order.
    public var deferredSignals: [Int32] { waiters?.signals ?? [] }

    /// The exec processes running now (they pin the container: no scale-down).
    public var runningExecs: [String] {
        switch state {
        case .running(let r): return r.execs
        case .created, .scalingDown, .scaledDown, .waking, .stopped: return []
        }
    }

    /// Whether the next scale-down would checkpoint (`true`) or kill (`false`). Turns false for
    /// good after a checkpoint or restore failure.
    public var checkpointingEnabled: Bool { checkpointingAllowed }

    /// Whether the container can still scale down (non-zero duration, redirect available).
    public var scaleDownEnabled: Bool { scaleDownAllowed }

    /// The exit status reported when the container stopped, if it stopped after running.
    public var exitStatus: Int32? {
        switch state {
        case .stopped(let s): return s.exitStatus
        case .created, .running, .scalingDown, .scaledDown, .waking: return nil
        }
    }

    /// Whatever waits for the operation in flight; nil when none is in flight.
    var waiters: Waiters? {
        switch state {
        case .scalingDown(let s): return s.waiters
        case .waking(let w): return w.waiters
        case .created, .running, .scaledDown, .stopped: return nil
        }
    }
}
