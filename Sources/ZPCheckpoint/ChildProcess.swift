import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// glibc ≥ 2.34 exports this; the Glibc module map does not declare it.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func zp_posix_spawn_file_actions_addclosefrom_np(
    _ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>,
    _ from: CInt
) -> CInt

/// The mount namespace a helper process started in.
public enum WorkerMountNamespace: Sendable, Equatable, CustomStringConvertible {
    /// The caller's (the shim's: the host's), as asked.
    case caller
    /// One of its own with this many mounts (decision 0067).
    case own(mounts: Int)
    /// The caller's, because its own could not be made (the reason).
    case callerAfterFailure(String)

    /// "own (31 mounts)", "host's", "host's (own failed: …)".
    public var description: String {
        switch self {
        case .caller: return "host's"
        case .own(let n): return "own (\(n) mounts)"
        case .callerAfterFailure(let why): return "host's (own failed: \(why))"
        }
    }
}

/// Spawns helper processes (CRIU workers, the lazy-pages daemon) with chosen descriptors at 3, 4, ...
/// Uses posix_spawn directly: Foundation's Process cannot map descriptors to fixed numbers.
///
/// Every child starts with the file creation mask ``fileCreationMask`` (owner-only): CRIU creates
/// its image files with mode 0664 and its logs and sockets with the mode the umask leaves, so under
/// a node's usual umask 022 a checkpoint (the container's memory) would be readable by every local
/// user. The mask is set on the spawning thread only (``Threads/runOnNewThread(fileCreationMask:_:)``),
/// never for the whole shim, whose other children (runc, and through it the containers) keep theirs.
/// CRIU restores each task's own umask from its images, so restored processes are not affected.
enum ChildProcess {
    /// The umask of every child: files, folders and sockets it creates are owner-only.
    static let fileCreationMask: mode_t = 0o077

    /// Starts `path arguments...` with `descriptors[i]` at fd 3+i (and `stdin`, `stdout`,
    /// `stderr` at 0-2 when given), every other descriptor above them closed, default signal
    /// dispositions, an empty signal mask and umask ``fileCreationMask``. The descriptors stay the
    /// caller's: the child gets duplicates. The child's environment is the caller's, with the
    /// `NAME=value` entries of `environment` replacing any of the same name.
    /// - Returns: the child's pid; the caller reaps it.
    /// - Throws: `SystemError` from dup, posix_spawn, or the thread that spawns with the umask.
    static func spawn(
        _ path: FilePath,
        arguments: [String],
        descriptors: [SharedDescriptor] = [],
        stdin: SharedDescriptor? = nil,
        stdout: SharedDescriptor? = nil,
        stderr: SharedDescriptor? = nil,
        environment: [String] = []
    )
        throws(SystemError) -> Int32
    {
        try spawn(
            path,
            arguments: arguments,
            descriptors: descriptors,
            stdin: stdin,
            stdout: stdout,
            stderr: stderr,
            environment: environment,
            mountNamespace: nil
        ).pid
    }

    /// ``spawn(_:arguments:descriptors:stdin:stdout:stderr:environment:)``, in a mount namespace of the child's
    /// own with only the mounts `mountNamespace` keeps (decision 0067), made by the spawning thread
    /// before it spawns. When that namespace cannot be made, the child starts in the caller's and
    /// the returned ``WorkerMountNamespace`` says why.
    /// - Returns: the child's pid (the caller reaps it) and where it started.
    /// - Throws: `SystemError` from dup, posix_spawn, or the thread that spawns; also when the
    ///   spawning thread could not go back to the caller's namespace after a failed confinement
    ///   (nothing was started then).
    static func spawn(
        _ path: FilePath,
        arguments: [String],
        descriptors: [SharedDescriptor] = [],
        stdin: SharedDescriptor? = nil,
        stdout: SharedDescriptor? = nil,
        stderr: SharedDescriptor? = nil,
        environment: [String] = [],
        mountNamespace: ConfinedMountNamespace?
    )
        throws(SystemError) -> (pid: Int32, mounts: WorkerMountNamespace)
    {
        // Move every source above the target range first, so dup2(src, 3+i) never overwrites a source.
        var high: [SharedDescriptor] = []
        for source in descriptors {
            high.append(SharedDescriptor(try source.duplicate(atLeast: 100)))
        }
        defer { withExtendedLifetime(high) {} }  // open until the child has its copies
        var actions = posix_spawn_file_actions_t()
        try systemCallReturningErrno("posix_spawn_file_actions_init") { posix_spawn_file_actions_init(&actions) }
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in [stdin, stdout, stderr].enumerated() {
            guard let raw = source?.rawValue else { continue }
            try systemCallReturningErrno("posix_spawn_file_actions_adddup2") {
                posix_spawn_file_actions_adddup2(&actions, raw, CInt(target))
            }
        }
        for (i, fd) in high.enumerated() {
            let raw = fd.rawValue
            try systemCallReturningErrno("posix_spawn_file_actions_adddup2") {
                posix_spawn_file_actions_adddup2(&actions, raw, CInt(3 + i))
            }
        }
        try systemCallReturningErrno("posix_spawn_file_actions_addclosefrom_np") {
            zp_posix_spawn_file_actions_addclosefrom_np(&actions, CInt(3 + high.count))
        }
        var attr = posix_spawnattr_t()
        try systemCallReturningErrno("posix_spawnattr_init") { posix_spawnattr_init(&attr) }
        defer { posix_spawnattr_destroy(&attr) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        try systemCallReturningErrno("posix_spawnattr_setsigmask") { posix_spawnattr_setsigmask(&attr, &noSignals) }
        try systemCallReturningErrno("posix_spawnattr_setsigdefault") {
            posix_spawnattr_setsigdefault(&attr, &allSignals)
        }
        try systemCallReturningErrno("posix_spawnattr_setflags") {
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        }
        let argv = ([path.string] + arguments).map { strdup($0) }
        defer { for p in argv { free(p) } }
        // The caller's environment without the names `environment` sets, then those entries.
        let extra = environment.map { strdup($0) }
        defer { for p in extra { free(p) } }
        let envp = environment.isEmpty ? [] : Self.inheritedEnvironment(overriddenBy: environment) + extra
        var pid: pid_t = 0
        var mounts = WorkerMountNamespace.caller
        let spawned = try Threads.runOnNewThread(fileCreationMask: fileCreationMask) {
            () -> Result<Void, SystemError> in
            Result { () throws(SystemError) in
                if let mountNamespace {
                    do throws(ConfinedMountNamespace.Failure) {
                        let entered = try mountNamespace.enter()
                        mounts = .own(mounts: entered.mounts)
                    } catch {
                        guard error.wentBack else { throw error.error }
                        mounts = .callerAfterFailure("\(error)")
                    }
                }
                try systemCallReturningErrno("posix_spawn", path.string) {
                    (argv + [nil]).withUnsafeBufferPointer { args in
                        if environment.isEmpty {
                            return posix_spawn(&pid, path.string, &actions, &attr, args.baseAddress!, environ)
                        }
                        return (envp + [nil]).withUnsafeBufferPointer { env in
                            posix_spawn(&pid, path.string, &actions, &attr, args.baseAddress!, env.baseAddress!)
                        }
                    }
                }
            }
        }
        try spawned.get()
        return (pid, mounts)
    }

    /// The caller's environment entries whose names `environment` (`NAME=value`) does not set.
    private static func inheritedEnvironment(overriddenBy environment: [String]) -> [UnsafeMutablePointer<CChar>?] {
        func name(_ entry: String) -> Substring { entry.prefix { $0 != "=" } }
        let names = Set(environment.map(name))
        var kept: [UnsafeMutablePointer<CChar>?] = []
        var entry = environ
        while let e = entry.pointee {
            if !names.contains(name(String(cString: e))) { kept.append(e) }
            entry += 1
        }
        return kept
    }

    /// Waits for `pid` to exit; returns the raw wait status.
    @discardableResult
    static func wait(_ pid: Int32) -> CInt {
        var status: CInt = 0
        _ = try? systemCall("waitpid", "pid \(pid)") { waitpid(pid, &status, 0) }  // ECHILD: reaped elsewhere
        return status
    }
}
