#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Signals to processes.
public enum Processes {
    /// Sends `signal` to `pid` (`kill(2)`).
    /// - Parameters:
    ///   - pid: the process.
    ///   - signal: e.g. `SIGTERM`.
    /// - Throws: ``SystemError`` naming the pid and signal (`ESRCH` when the process is gone).
    public static func kill(_ pid: pid_t, signal: CInt) throws(SystemError) {
        try systemCall("kill", "pid \(pid) signal \(signal)") { Glibc.kill(pid, signal) }
    }
}
