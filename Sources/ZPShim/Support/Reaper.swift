import CZPShim
import Dispatch
import Synchronization
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// How a process ended, as containerd reports it.
public struct ExitStatus: Sendable, Equatable {
    /// The exit code, or 128 + the signal number when a signal ended the process.
    public var code: UInt32
    /// When the shim saw the exit, in nanoseconds since the Unix epoch.
    public var exitedAt: Int64

    /// Creates a status from its parts.
    public init(code: UInt32, exitedAt: Int64) {
        self.code = code
        self.exitedAt = exitedAt
    }

    /// Decodes a `wait4` status word (WIFEXITED/WEXITSTATUS/WTERMSIG by hand: they are C macros).
    init(waitStatus status: CInt, at time: Int64) {
        let signal = status & 0x7f
        code = signal == 0 ? UInt32((status >> 8) & 0xff) : 128 + UInt32(signal)
        exitedAt = time
    }
}

/// What to start: a program, its arguments and where its descriptors come from.
public struct SpawnSpec: Sendable {
    /// Absolute path of the program.
    public var path: String
    /// `argv`, including `argv[0]`.
    public var arguments: [String]
    /// Environment; nil inherits ours.
    public var environment: [String]?
    /// Descriptors for 0, 1, 2; nil means `/dev/null`. The child gets copies.
    public var stdin: SharedDescriptor?, stdout: SharedDescriptor?, stderr: SharedDescriptor?
    /// Descriptors to pass as 3, 4, ... in order. The child gets copies.
    public var extraDescriptors: [SharedDescriptor] = []
    /// Working directory of the child; nil keeps ours.
    public var workingDirectory: String?
    /// Start the child in a new session (`setsid`).
    public var newSession = false

    /// A spec with stdio on `/dev/null`.
    public init(path: String, arguments: [String]) {
        self.path = path
        self.arguments = arguments
    }
}

/// The shim's only caller of `wait`: reaps every child and hands each exit to whoever waits for it.
///
/// The shim is a child subreaper, so container processes are re-parented to it and must be reaped
/// here. `wait4(-1)` also reaps the shim's own short-lived children (runc invocations), so those are
/// started through ``spawn(_:)``, which records the pid under the same lock the reaper takes before
/// it dispatches an exit: an exit is never lost nor given to the wrong waiter. Exits of processes the
/// shim did not spawn itself (container init and exec processes) arrive on ``orphanExits``.
///
/// A dedicated thread blocks in `wait4`; when there are no children it sleeps until the next spawn,
/// or at most ``idlePoll``: children also come from elsewhere (CRIU workers and lazy-pages daemons
/// started by ZPCheckpoint, and above all a restored container init, which CRIU hands to the shim
/// as its child), and their exits must not wait for the next runc call.
public final class Reaper: Sendable {
    /// The process-wide reaper (there can be only one `wait4(-1)` caller per process).
    public static let shared = Reaper()

    private enum Claim {
        case waiting(CheckedContinuation<ExitStatus, Never>?)
        case exited(ExitStatus)
    }

    private struct State {
        var claims: [pid_t: Claim] = [:]
    }

    private enum Dispatch {
        case resume(CheckedContinuation<ExitStatus, Never>, ExitStatus)
        case stored
        case orphan
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    /// How long the reaper sleeps without children before it looks again.
    static let idlePoll = DispatchTimeInterval.milliseconds(20)
    private let orphanContinuation: AsyncStream<(pid: pid_t, status: ExitStatus)>.Continuation
    /// Exits of children and adopted orphans that ``spawn(_:)`` did not start.
    public let orphanExits: AsyncStream<(pid: pid_t, status: ExitStatus)>

    private init() {
        (orphanExits, orphanContinuation) = AsyncStream.makeStream(of: (pid: pid_t, status: ExitStatus).self)
        // A plain pthread: the reaper blocks in wait4 for the life of the process.
        Threads.startDetached { [self] in reapForever() }
    }

    /// Makes this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`).
    /// - Throws: ``SystemError`` from `prctl`.
    public static func becomeSubreaper() throws(SystemError) {
        try systemCall("prctl(PR_SET_CHILD_SUBREAPER)") { czpshim_set_child_subreaper() }
    }

    /// Starts a child with `posix_spawn` and records it, so that its exit goes to ``wait(for:)``.
    ///
    /// - Returns: The child's pid.
    /// - Throws: ``SystemError`` from `posix_spawn` (e.g. `ENOENT` for a missing program).
    public func spawn(_ spec: SpawnSpec) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        // Move the sources above every target first, so that a dup2 never clobbers a later source.
        let targets = [spec.stdin, spec.stdout, spec.stderr] + spec.extraDescriptors.map(Optional.some)
        for (target, source) in targets.enumerated() {
            if let source {
                posix_spawn_file_actions_adddup2(&actions, source.rawValue, CInt(target))
            } else {
                posix_spawn_file_actions_addopen(
                    &actions,
                    CInt(target),
                    "/dev/null",
                    target == 0 ? O_RDONLY : O_WRONLY,
                    0
                )
            }
        }
        if let cwd = spec.workingDirectory { czpshim_spawn_addchdir(&actions, cwd) }
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if spec.newSession { flags |= czpshim_posix_spawn_setsid() }
        posix_spawnattr_setflags(&attributes, flags)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv = spec.arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let envStrings = spec.environment.map { $0.map { strdup($0) } + [nil] }
        defer { envStrings?.forEach { free($0) } }

        let pid: pid_t = try state.withLock { (state) throws(SystemError) -> pid_t in
            var pid: pid_t = 0
            let rc: CInt
            if let envStrings {
                rc = posix_spawn(&pid, spec.path, &actions, &attributes, argv, envStrings)
            } else {
                rc = posix_spawn(&pid, spec.path, &actions, &attributes, argv, environ)
            }
            guard rc == 0 else {
                throw SystemError(call: "posix_spawn", subject: spec.path, errno: Errno(rawValue: rc))
            }
            state.claims[pid] = .waiting(nil)
            return pid
        }
        wakeup.signal()
        return pid
    }

    /// Waits for a child started by ``spawn(_:)`` to exit.
    /// - Precondition: `pid` came from ``spawn(_:)`` and nobody else waits for it.
    public func wait(for pid: pid_t) async -> ExitStatus {
        await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus, Never>) in
            let done: ExitStatus? = state.withLock { state in
                switch state.claims[pid] {
                case .exited(let status):
                    state.claims[pid] = nil
                    return status
                case .waiting(nil):
                    state.claims[pid] = .waiting(continuation)
                    return nil
                case .waiting(.some), nil:
                    preconditionFailure("wait(for: \(pid)) without spawn, or twice")
                }
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    private func reapForever() {
        while true {
            var status: CInt = 0
            let pid = wait4(-1, &status, 0, nil)
            if pid == -1 {
                if errno == ECHILD { _ = wakeup.wait(timeout: .now() + Self.idlePoll) }
                continue
            }
            let exit = ExitStatus(waitStatus: status, at: SystemClock.realtimeNanoseconds())
            let action: Dispatch = state.withLock { state in
                switch state.claims[pid] {
                case .waiting(let continuation?):
                    state.claims[pid] = nil
                    return .resume(continuation, exit)
                case .waiting(nil):
                    state.claims[pid] = .exited(exit)
                    return .stored
                case .exited, nil:
                    return .orphan
                }
            }
            switch action {
            case .resume(let continuation, let exit): continuation.resume(returning: exit)
            case .stored: break
            case .orphan: orphanContinuation.yield((pid, exit))
            }
        }
    }
}
