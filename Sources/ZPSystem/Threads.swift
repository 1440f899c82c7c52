import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Plain POSIX threads, for work that must not run on Swift's cooperative pool or on a shared
/// thread: per-thread kernel state (`setns`), or calls that block for the life of the process.
public enum Threads {
    /// The name of every thread started here (`/proc/PID/task/TID/comm`).
    public static let threadName = "zp-thread"

    /// Runs `body` on a new thread and waits for it (`pthread_create`, `pthread_join`).
    ///
    /// The caller's thread is blocked until `body` returns, so `body` (and what it captures) is
    /// never used by two threads at once: like `DispatchQueue.sync`, it need not be `Sendable`.
    /// - Parameter body: the work; its thread ends when it returns.
    /// - Returns: what `body` returned.
    /// - Throws: ``SystemError`` naming `pthread_create` when no thread can be started.
    public static func runOnNewThread<T>(_ body: () -> T) throws(SystemError) -> T {
        try withoutActuallyEscaping(body) { (escapable) throws(SystemError) -> T in
            let job = JoinedJob(escapable)
            let context = Unmanaged.passRetained(job as AnyObject)
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, runThreadJob, context.toOpaque())
            guard rc == 0 else {
                context.release()
                throw SystemError(call: "pthread_create", errno: Errno(rawValue: rc))
            }
            pthread_join(thread, nil)
            return job.result!
        }
    }

    /// Runs `body` on a new thread with a file creation mask (umask) of its own, and waits for it.
    ///
    /// The umask is a property of the process's shared file system attributes; the thread first
    /// takes a private copy of them (`unshare(CLONE_FS)`), so `mask` applies to files, folders and
    /// sockets the thread creates, and to the processes it spawns (they copy the spawning thread's
    /// attributes), while the rest of the process keeps its umask. Used to start CRIU so that its
    /// images, logs and sockets are owner-only from creation.
    /// - Parameters:
    ///   - mask: the umask, e.g. `0o077` for owner-only.
    ///   - body: the work; its thread ends when it returns.
    /// - Returns: what `body` returned.
    /// - Throws: ``SystemError`` naming `unshare` or `pthread_create`.
    public static func runOnNewThread<T>(fileCreationMask mask: mode_t, _ body: () -> T) throws(SystemError) -> T {
        try runOnNewThread { () -> Result<T, SystemError> in
            Result { () throws(SystemError) -> T in
                try systemCall("unshare", "CLONE_FS") { czpsystem_unshare_fs() }
                umask(mask)
                return body()
            }
        }.get()
    }

    /// Starts `body` on a new detached thread (for calls that block for long: `wait4`, opening a
    /// FIFO whose writer may never come).
    /// - Parameter body: the work.
    /// - Precondition: the thread can be created (failure means the process is out of resources).
    public static func startDetached(_ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(DetachedJob(body) as AnyObject)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, runThreadJob, context.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(thread)
    }
}

/// The start routine of every thread started here: names the thread ``Threads/threadName`` (it
/// would otherwise carry its creator's name, e.g. one of NIO's pool threads), then runs the job
/// passed in retained.
private func runThreadJob(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    czpsystem_name_this_thread(Threads.threadName)
    (Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! any ThreadJob).run()
    return nil
}

/// Work for one thread.
private protocol ThreadJob: AnyObject {
    func run()
}

/// The closure and result of one joined thread. The thread writes `result` before it exits; the
/// caller reads it only after `pthread_join`, which orders the two: no lock is needed.
private final class JoinedJob<T>: ThreadJob {
    let body: () -> T
    var result: T?

    init(_ body: @escaping () -> T) { self.body = body }

    func run() { result = body() }
}

/// The closure of one detached thread.
private final class DetachedJob: ThreadJob {
    let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    func run() { body() }
}
