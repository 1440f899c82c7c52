#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// glibc ≥ 2.34 exports this; the Glibc module map does not declare it.
@_silgen_name("posix_spawn_file_actions_addclosefrom_np")
private func zp_posix_spawn_file_actions_addclosefrom_np(
    _ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: CInt) -> CInt

/// Spawns helper processes (CRIU workers, the lazy-pages daemon) with chosen descriptors at 3, 4, ...
/// Uses posix_spawn directly: Foundation's Process cannot map descriptors to fixed numbers.
enum ChildProcess {
    /// Starts `path arguments...` with `descriptors[i]` at fd 3+i, every other descriptor above
    /// them closed, default signal dispositions and an empty signal mask.
    /// - Returns: the child's pid; the caller reaps it.
    /// - Throws: `SystemCallError` from dup or posix_spawn.
    static func spawn(_ path: FilePath, arguments: [String], descriptors: [FileDescriptor] = [],
                      stdin: FileDescriptor? = nil, stdout: FileDescriptor? = nil, stderr: FileDescriptor? = nil)
        throws(SystemCallError) -> Int32
    {
        // Move every source above the target range first, so dup2(src, 3+i) never overwrites a source.
        var high: [CInt] = []
        defer { for fd in high { _ = Glibc.close(fd) } }
        for src in descriptors.map(\.rawValue) {
            high.append(try syscall("fcntl(F_DUPFD_CLOEXEC)", "fd \(src)") { fcntl(src, F_DUPFD_CLOEXEC, CInt(100)) })
        }
        var actions = posix_spawn_file_actions_t()
        try posixCall("posix_spawn_file_actions_init") { posix_spawn_file_actions_init(&actions) }
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            try posixCall("posix_spawn_file_actions_adddup2") { posix_spawn_file_actions_adddup2(&actions, stdin.rawValue, 0) }
        }
        if let stdout {
            try posixCall("posix_spawn_file_actions_adddup2") { posix_spawn_file_actions_adddup2(&actions, stdout.rawValue, 1) }
        }
        if let stderr {
            try posixCall("posix_spawn_file_actions_adddup2") { posix_spawn_file_actions_adddup2(&actions, stderr.rawValue, 2) }
        }
        for (i, fd) in high.enumerated() {
            try posixCall("posix_spawn_file_actions_adddup2") { posix_spawn_file_actions_adddup2(&actions, fd, CInt(3 + i)) }
        }
        try posixCall("posix_spawn_file_actions_addclosefrom_np") {
            zp_posix_spawn_file_actions_addclosefrom_np(&actions, CInt(3 + high.count))
        }
        var attr = posix_spawnattr_t()
        try posixCall("posix_spawnattr_init") { posix_spawnattr_init(&attr) }
        defer { posix_spawnattr_destroy(&attr) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        try posixCall("posix_spawnattr_setsigmask") { posix_spawnattr_setsigmask(&attr, &noSignals) }
        try posixCall("posix_spawnattr_setsigdefault") { posix_spawnattr_setsigdefault(&attr, &allSignals) }
        try posixCall("posix_spawnattr_setflags") {
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        }
        let argv = ([path.string] + arguments).map { strdup($0) }
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        try posixCall("posix_spawn", path.string) {
            (argv + [nil]).withUnsafeBufferPointer { args in
                posix_spawn(&pid, path.string, &actions, &attr, args.baseAddress!, environ)
            }
        }
        return pid
    }

    /// Waits for `pid` to exit; returns the raw wait status.
    @discardableResult
    static func wait(_ pid: Int32) -> CInt {
        var status: CInt = 0
        while waitpid(pid, &status, 0) == -1 && Glibc.errno == EINTR {}
        return status
    }
}
