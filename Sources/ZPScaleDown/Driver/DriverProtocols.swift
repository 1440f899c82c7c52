// The scale-down driver's edges (decision 0018): three small protocols for what it commands —
// the container (runc, its processes, its exits), checkpoint and restore (CRIU, the images, the
// lazy-pages daemon), the redirect (activator and eBPF steering) — plus the sinks it reports to and
// the clock it reads. The shim adapts its runc driver, CRIU checkpointer, status board and wake
// group member to them; tests use fakes.
import ZPCore

/// The container the driver scales: runc and the container's processes.
///
/// Implemented by the shim over its runc driver, its `ShimContainer` actor and its reaper's pid
/// index. Every method may be called from any task; none is called under the driver's lock.
public protocol ScaleDownContainerControl: Sendable {
    /// Sends `signal` to the container's init process (`runc kill`), or to all of its processes.
    /// - Throws: when runc fails (the driver logs it).
    func signal(_ signal: Int32, allProcesses: Bool) async throws

    /// Starts the container afresh from its bundle (`runc delete --force`, `runc create` with the
    /// same stdio, `runc start`) and makes the new process the container's init.
    /// - Returns: the new init's pid.
    /// - Throws: when any step fails.
    func coldStart() async throws -> Int32

    /// Makes the restored process `pid` the container's init (what `State`, `Pids` and `Kill` see).
    func adoptRestoredInit(pid: Int32) async

    /// From now on, report exits of `pid` to the driver (as `processExited`). Called after the
    /// lifecycle learnt that `pid` runs, so its exit cannot overtake that.
    /// - Returns: the exit status (containerd's: 128 + signal for a signalled process) when the
    ///   process already exited before this call, else nil.
    func watchExits(of pid: Int32) -> Int32?

    /// Publishes the container's exit with `status` (TaskExit, answers to Wait).
    func reportExit(status: Int32) async

    /// The TCP ports the process tree rooted at `pid` listens on (port discovery when no
    /// `ports-map` names them); empty when none yet.
    func listeningPorts(ofTreeAt pid: Int32) -> [UInt16]

    /// Those of `ports` that a process outside the tree rooted at `pid` listens on in the
    /// container's network namespace (another container of the pod): a `ports-map` that names
    /// them would let this container's scale-down take the other's connections.
    func portsServedByOthers(_ ports: [UInt16], treeAt pid: Int32) -> [UInt16]

    /// The connections on their way to the listeners on `ports` in the network namespace of
    /// `pid` that the application has not accepted yet, and the namespace's listener pressure
    /// counter. A checkpoint would reset them: CRIU dumps a listener, not its queue.
    func pendingConnections(on ports: [UInt16], treeAt pid: Int32) -> PendingConnections
}

/// What ``ScaleDownContainerControl/pendingConnections(on:treeAt:)`` finds.
public struct PendingConnections: Sendable, Hashable {
    /// Connections in the listeners' accept queues and handshakes not yet complete (SYN_RECV).
    public var queued: Int
    /// A counter of the namespace (`ListenDrops + SyncookiesSent`, ``ProcNetStat``) that grows
    /// when a listener drops a handshake or answers with a SYN cookie: the clients concerned have
    /// no state the tables show and retransmit seconds apart. Nil when unreadable.
    public var listenerPressure: UInt64?

    public init(queued: Int, listenerPressure: UInt64? = nil) {
        self.queued = queued
        self.listenerPressure = listenerPressure
    }
}

/// Checkpoint and restore of the container: CRIU, the checkpoint images, the restore prepared
/// while scaled down.
public protocol ScaleDownCheckpoints: Sendable {
    /// Dumps the container's processes into the checkpoint images (replacing older images; with
    /// `incremental`, on top of the pre-dump image, which is kept). The process ends.
    /// - Returns: what the log line of the checkpoint shows (CRIU's timings, statistics).
    /// - Throws: when CRIU fails.
    func checkpoint(incremental: Bool) async throws -> ScaleDownReport

    /// Pre-dumps the running container's memory (replacing an older pre-dump); it keeps running.
    /// - Returns: what the log line shows.
    /// - Throws: when CRIU fails or cannot track dirty memory here (pre-dumps then stay off).
    func preDump() async throws -> ScaleDownReport

    /// Prepares the restore from the checkpoint images (CRIU worker, mounts; for a lazy restore
    /// the `criu lazy-pages` daemon), off the path of the first connection.
    /// - Throws: when nothing could be prepared (the restore then starts its own worker).
    func prepareRestore() async throws -> any PreparedRestore

    /// Restores from the checkpoint images with a worker of its own.
    /// - Throws: when CRIU fails.
    func restoreFully() async throws -> RestoredProcess

    /// Removes the checkpoint images (and the pre-dump with them). Idempotent.
    func removeImages()
}

/// A restore prepared while the container is scaled down. The driver's `RestoreSupervision` owns
/// it: runs it once, watches its lazy-pages daemon, discards it exactly once.
public protocol PreparedRestore: Sendable {
    /// The `criu lazy-pages` daemon that serves the pages of a lazy restore, as logs name it
    /// (`criu lazy-pages (pid 812)`); nil for a full restore.
    var lazyDaemon: String? { get }

    /// Why a lazy restore was wanted but a full one was prepared, if so.
    var lazyFallbackReason: String? { get }

    /// What the log line of the preparation shows (lazy or not and why, the daemon's pid).
    var summary: [String: String] { get }

    /// Restores with the prepared worker. Used once, whatever the outcome.
    /// - Throws: when CRIU fails.
    func run() async throws -> RestoredProcess

    /// Whether the lazy-pages daemon is gone (true when there is none). Does not block.
    func daemonExited() -> Bool

    /// How the daemon ended, once ``daemonExited()`` said so: `clean` when it served every page;
    /// `how` names the source (its wait status, the shim reaper's, CRIU's log).
    func daemonEnd() async -> (clean: Bool, how: String)

    /// Releases what is left (worker, descriptors, mounts; stops a daemon that still runs).
    /// Idempotent.
    func discard()

    /// A figure that grows while the lazy-pages daemon works (e.g. the bytes it read and wrote);
    /// nil when unknown (no daemon, or it cannot be read): the driver then detects no hang.
    func daemonProgress() -> UInt64?
}

extension PreparedRestore {
    /// No progress figure: a hung daemon is found only by a checkpoint's busy limit.
    public func daemonProgress() -> UInt64? { nil }
}

/// The redirect of the container's ports: the activator that accepts connections while the
/// container is scaled down, and the eBPF steering of new connections to it.
public protocol ScaleDownRedirect: Sendable {
    /// Where the redirect lives, for logs (the pod's network namespace).
    var location: String { get }

    /// Sets up the activator for `ports` (listeners, steering entries, redirects off).
    /// - Parameter connection: called for each connection that needs the application; returns
    ///   once it runs (the activator then proxies), throws when it will not come back.
    /// - Throws: when it cannot be set up (scale-down then stays off).
    func makeActivator(
        ports: [UInt16],
        connection: @escaping @Sendable () async throws -> Void
    ) async throws -> any ScaleDownActivator

    /// Lets new connections on `ports` reach the application directly. Idempotent.
    /// - Throws: when a steering entry cannot be removed.
    func redirectOff(ports: [UInt16]) throws

    /// The newest activity stamp on `ports` (CLOCK_MONOTONIC, like ``ZPInstant``) and the number
    /// of connections open to the application.
    func activity(ports: [UInt16]) -> (lastActivity: ZPInstant?, openConnections: Int)

    /// Called every 50 ms while restored listeners wait to be settled: those whose backlog was
    /// raised for the connections queued during the restore get their own back once they took
    /// them (decision 0056).
    func settleRestoredListeners()

    /// Whether restored listeners still wait for ``settleRestoredListeners()`` (the driver polls
    /// only while they do, or while a lazy-pages daemon serves).
    var hasRestoredListenersToSettle: Bool { get }
}

extension ScaleDownRedirect {
    /// Nothing to settle (redirects without handover listeners).
    public func settleRestoredListeners() {}

    /// None (redirects without handover listeners).
    public var hasRestoredListenersToSettle: Bool { false }
}

/// An activator made by ``ScaleDownRedirect/makeActivator(ports:connection:)``.
public protocol ScaleDownActivator: Sendable {
    /// Serves until the calling task is cancelled.
    /// - Throws: when serving fails.
    func run() async throws

    /// Steers new connections on the container's ports to the activator (after it re-armed its
    /// single flight).
    /// - Throws: when a steering entry cannot be set (the driver treats the redirect as lost).
    func redirectOn() throws
}

/// Where status changes go (the shim's status board: labels, events, metrics of the manager).
public protocol ScaleDownStatusSink: Sendable {
    /// The container's phase and pid as they are now, and what just happened, if anything.
    func containerChanged(phase: ContainerLifecycle.Phase, pid: Int32?, report: ScaleDownStatusReport?)
}

/// A checkpoint or restore outcome, or a dry run's decision, for the status sink.
public enum ScaleDownStatusReport: Sendable, Hashable {
    /// The container was checkpointed in `duration`.
    case checkpointed(duration: Duration)
    /// A checkpoint failed; the container keeps running.
    case checkpointFailed(reason: String)
    /// The container was restored in `duration`.
    case restored(duration: Duration)
    /// A restore (or cold start) failed, or the restored process had to be killed.
    case restoreFailed(reason: String)
    /// Dry run: the container would have been scaled down now; it keeps running.
    case wouldScaleDown
    /// Dry run: the container would have been restored now (it never stopped running).
    case wouldRestore
}

/// The container's wake group membership (decision 0011).
public protocol ScaleDownWakeGroup: Sendable {
    /// Asks the other members to come back. Returns at once.
    func requestWake()
    /// Lists the member and carries out wake requests until ``leave()`` or cancellation.
    func run() async
    /// Removes the member's entry.
    func leave()
}

/// The clock the driver reads and sleeps on: `CLOCK_MONOTONIC`, the clock of the eBPF activity
/// stamps. Tests use a clock they advance by hand.
public protocol ScaleDownClock: Sendable {
    /// Now.
    func now() -> ZPInstant
    /// Returns at `deadline` (at once when it passed).
    /// - Throws: `CancellationError` when the task is cancelled first.
    func sleep(until deadline: ZPInstant) async throws
}

/// What a checkpoint or pre-dump reports for its log line: key and value pairs (CRIU's phase
/// timings, dump statistics).
public struct ScaleDownReport: Sendable, Hashable {
    /// The log metadata.
    public var details: [String: String]

    /// A report.
    /// - Parameter details: the log metadata.
    public init(details: [String: String] = [:]) {
        self.details = details
    }
}

/// A restored process.
public struct RestoredProcess: Sendable, Hashable {
    /// The restored init's pid.
    public var pid: Int32
    /// What the log line of the restore shows (CRIU's timings).
    public var details: [String: String]

    /// A restored process.
    /// - Parameters:
    ///   - pid: the restored init's pid.
    ///   - details: the log metadata.
    public init(pid: Int32, details: [String: String] = [:]) {
        self.pid = pid
        self.details = details
    }
}

/// Why the driver refused or failed a connection, an exec or a wake.
public struct ScaleDownError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What happened, naming the container.
    public var description: String

    /// An error.
    /// - Parameter description: what happened, naming the container.
    public init(_ description: String) {
        self.description = description
    }
}
