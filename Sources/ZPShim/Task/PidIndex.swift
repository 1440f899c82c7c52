import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Maps the pids of container processes to their container, and keeps exits that arrive before the
/// pid is known (a process may exit before `runc create`/`exec` returns and its pid file is read).
final class PidIndex: Sendable {
    private struct State {
        var owners: [pid_t: ShimContainer] = [:]
        var earlyExits: [pid_t: ExitStatus] = [:]
        var earlyOrder: [pid_t] = []
    }

    /// Early exits kept at most; older ones are forgotten (they belong to processes nobody claims).
    static let earlyExitLimit = 1024

    private let state = Mutex(State())

    /// Records that `pid` belongs to `container`.
    /// - Returns: The exit of `pid` if it already happened; the caller delivers it.
    ///
    /// A kept exit is stale when a process with that pid exists now (pids wrap at `pid_max`, and
    /// exits of processes nobody registers, such as CRIU workers, are kept too): the real exit of
    /// the new process has not been reaped yet, so the kept one is dropped.
    func register(_ pid: pid_t, to container: ShimContainer) -> ExitStatus? {
        state.withLock { state in
            if let exit = state.earlyExits.removeValue(forKey: pid) {
                state.earlyOrder.removeAll { $0 == pid }
                if Glibc.kill(pid, 0) != 0 { return exit }
            }
            state.owners[pid] = container
            return nil
        }
    }

    /// The container that owns `pid`, removed from the index; or nil after keeping the exit for a
    /// later ``register(_:to:)``.
    func claimExit(of pid: pid_t, status: ExitStatus) -> ShimContainer? {
        state.withLock { state in
            if let owner = state.owners.removeValue(forKey: pid) { return owner }
            state.earlyExits[pid] = status
            state.earlyOrder.append(pid)
            if state.earlyOrder.count > Self.earlyExitLimit {
                state.earlyExits[state.earlyOrder.removeFirst()] = nil
            }
            return nil
        }
    }

    /// Takes out the kept exit of `pid`, a process the shim started but did not spawn through the
    /// reaper (a `criu lazy-pages` daemon), when that exit was seen at or after `notBefore`
    /// (nanoseconds since the Unix epoch, ``ExitStatus/exitedAt``): an older one belongs to an
    /// earlier process with the same pid and stays. Nil when no such exit is kept (yet).
    func takeExit(of pid: pid_t, notBefore: Int64) -> ExitStatus? {
        state.withLock { state in
            guard let exit = state.earlyExits[pid], exit.exitedAt >= notBefore else { return nil }
            state.earlyExits[pid] = nil
            state.earlyOrder.removeAll { $0 == pid }
            return exit
        }
    }

    /// Forgets `pid` (the process was deleted).
    func forget(_ pid: pid_t) {
        state.withLock { _ = $0.owners.removeValue(forKey: pid) }
    }
}
