import CZPSystem

/// The kernel's perf scheduling hooks, kept switched on (decision 0076).
///
/// CRIU stops a task that leaves its parasite (dump) or its restorer (restore) with a hardware
/// breakpoint, which the kernel makes a perf event bound to that task. While no task-bound perf
/// event exists on the node, creating one first switches the kernel's perf scheduling hooks on and
/// waits for an RCU grace period (`account_event()`); a second after the last such event is gone
/// they go off again. So every checkpoint and every restore of an otherwise quiet node paid that
/// wait: 7-15 ms per breakpoint on an idle machine of this kind, 23.5 ms in a traced dump. One
/// event held open anywhere on the node keeps the hooks on, and the breakpoints cost microseconds.
public enum PerfScheduling {
    /// Opens a disabled software dummy event on the calling thread: it counts nothing, and it keeps
    /// the hooks on until its descriptor is closed (whatever becomes of the thread). The first one
    /// on a quiet node pays the grace period itself: call it off any latency-critical path.
    /// - Returns: the event's descriptor.
    /// - Throws: ``SystemError``: `EACCES` under a `kernel.perf_event_paranoid` that forbids it
    ///   without `CAP_PERFMON`, `ENOENT`/`ENOSYS` in a kernel without perf events.
    public static func holdHooks() throws(SystemError) -> OwnedDescriptor {
        OwnedDescriptor(
            adopting: try systemCall("perf_event_open", "a dummy software event") {
                czpsystem_perf_dummy_event_open()
            }
        )
    }
}
