// Transport for CRIU's RPC: one `criu swrk 3` worker per connection, spoken to over an
// AF_UNIX SOCK_SEQPACKET socketpair, one protobuf message per packet (CRIU's lib/c/criu.c does the
// same). No library speaks this: swift-nio has no SEQPACKET+SCM_RIGHTS child-process transport, and
// the calls are few and blocking by nature, so this is written by hand on the syscall funnel.

import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A notification (action-script callback) CRIU sent while serving a request.
public struct CRIUNotification: Sendable {
    /// The script name, e.g. "pre-dump", "post-dump", "setup-namespaces", "post-restore".
    public var script: String
    /// The restored root task's pid (setup-namespaces, post-restore), when CRIU sent one.
    public var pid: Int32?
    /// The pid of the CRIU worker serving the request (to watch or, in tests, to kill it).
    public var workerPID: Int32
    /// Time since the request was sent.
    public var elapsed: Duration
    /// A descriptor that came with the notification over SCM_RIGHTS (orphan-pts-master). It is
    /// closed when the hook returns: `take()` it (or duplicate it) to keep it.
    public var receivedFD: SharedDescriptor?
}

/// Caller hooks for CRIU notifications, by script name. A hook that throws makes the client answer
/// `notify_success=false`, which aborts the request; the error is reported as `.hookFailed`.
public struct CRIUHooks {
    /// Hooks by script name.
    public var byScript: [String: (CRIUNotification) throws -> Void]

    /// Creates an empty set of hooks.
    public init() { byScript = [:] }

    /// Sets the hook for one script name.
    public subscript(script: String) -> ((CRIUNotification) throws -> Void)? {
        get { byScript[script] }
        set { byScript[script] = newValue }
    }
}

/// One notification's arrival time, relative to the request.
public struct CRIUPhase: Sendable, Equatable {
    /// The script name.
    public var script: String
    /// Time since the request was sent.
    public var elapsed: Duration
}

/// The answer to a request, with what happened on the way.
public struct CRIUExchange: Sendable {
    /// CRIU's final response (success already checked).
    public var response: CRIUResponse
    /// Notifications in arrival order.
    public var phases: [CRIUPhase]
    /// Time from sending the request to the final response.
    public var duration: Duration
    /// Hooks that threw where CRIU carries on regardless (pre-resume, post-resume, post-dump on
    /// some paths): the request succeeded, these are reported instead of thrown.
    public var hookFailures: [String] = []
    /// The restored root pid as a notification reported it (setup-namespaces, post-restore).
    public var notifiedPID: Int32?
}

/// A connection to one `criu swrk` worker.
///
/// The connection owns the socket and the worker process: `close()` (or deinit) closes the socket
/// exactly once and reaps the worker. Calls block the calling thread; use a dedicated thread or
/// executor for them.
public final class CRIUConnection {
    /// The worker's pid.
    public let workerPID: Int32
    private var socket: OwnedDescriptor?
    private var reaped = false
    /// Created at spawn, for "spawn → answer" figures.
    public let spawnedAt: ContinuousClock.Instant
    /// How long `posix_spawn` took (with making the worker's mount namespace, when asked).
    public let spawnDuration: Duration
    /// The mount namespace the worker started in.
    public let mountNamespace: WorkerMountNamespace

    /// Starts `criu swrk 3` with one end of a fresh socketpair mapped to fd 3 and the given
    /// descriptors mapped to 4, 5, ... in order (for `inherit_fd`).
    ///
    /// - Parameters:
    ///   - criuPath: the CRIU binary.
    ///   - inheritedFDs: descriptors CRIU gets at 4+i; they stay the caller's (CRIU gets copies).
    ///   - environment: `NAME=value` entries added to the worker's environment (the shim's own
    ///     otherwise), e.g. ``Checkpointer/zeroPagesVariable``.
    ///   - mountNamespace: start the worker in a mount namespace of its own with only these
    ///     mounts (decision 0067); nil starts it in the caller's.
    /// - Throws: `CRIUError` `.spawnFailed` naming the binary and the errno.
    public init(
        criuPath: FilePath,
        inheritedFDs: [SharedDescriptor] = [],
        environment: [String] = [],
        mountNamespace: ConfinedMountNamespace? = nil
    ) throws(CRIUError) {
        let start = ContinuousClock.now
        var pair: [CInt] = [-1, -1]
        do {
            try systemCall("socketpair") {
                socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair)
            }
        } catch {
            throw CRIUError(code: .spawnFailed, request: .empty, message: "socketpair for \(criuPath): \(error)")
        }
        let ours = OwnedDescriptor(adopting: pair[0])
        let workerSide = SharedDescriptor(OwnedDescriptor(adopting: pair[1]))  // closed here once CRIU has its copy
        do {
            (workerPID, self.mountNamespace) = try ChildProcess.spawn(
                criuPath,
                arguments: ["swrk", "3"],
                descriptors: [workerSide] + inheritedFDs,
                environment: environment,
                mountNamespace: mountNamespace
            )
        } catch {
            throw CRIUError(code: .spawnFailed, request: .empty, message: "cannot start \(criuPath) swrk: \(error)")
        }
        socket = consume ours
        spawnedAt = start
        spawnDuration = ContinuousClock.now - start
    }

    deinit { close() }

    /// The socket's number while the connection is open (-1 after `close()`: calls then fail
    /// with EBADF, which the funnel treats as the bug it is).
    private var socketNumber: CInt { socket?.rawValue ?? -1 }

    /// How long a request past its deadline may run on to its next notification (see `exchange`).
    public static let abortGrace: Duration = .seconds(10)

    /// Closes the socket (once) and reaps the worker; kills it first if it has not exited within
    /// `grace`.
    public func close(grace: Duration = .seconds(5)) {
        socket = nil  // closes it
        guard !reaped else { return }
        let deadline = ContinuousClock.now + grace
        var status: CInt = 0
        while true {
            let r =
                (try? systemCall("waitpid", "criu swrk \(workerPID)") { waitpid(workerPID, &status, WNOHANG) }) ?? -1
            if r == workerPID || r == -1 { break }
            if ContinuousClock.now > deadline {
                _ = Glibc.kill(workerPID, SIGKILL)
                _ = waitpid(workerPID, &status, 0)
                break
            }
            usleep(1000)
        }
        reaped = true
    }

    /// Kills the worker with `signal` (tests use it to simulate a crash).
    public func kill(signal: CInt = SIGKILL) {
        guard !reaped else { return }
        _ = Glibc.kill(workerPID, signal)
    }

    // MARK: spawning

    // MARK: messages

    /// Sends one request as one packet.
    /// - Throws: `CRIUError` `.transport` when the worker's socket refuses the packet.
    public func send(_ request: CRIURequest) throws(CRIUError) {
        let bytes = request.encoded()
        let sock = socketNumber
        do {
            try systemCall("send", "criu swrk \(workerPID)") {
                bytes.withUnsafeBytes { Glibc.send(sock, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            }
        } catch {
            throw CRIUError(
                code: error.errno == .brokenPipe ? .workerDied : .transport,
                request: request.type,
                message: "sending \(request.type) to criu swrk \(workerPID): \(error)"
            )
        }
    }

    /// Receives one packet and decodes it, with any descriptors that came along (SCM_RIGHTS).
    ///
    /// - Parameters:
    ///   - request: the request being served (for error messages).
    ///   - deadline: give up (and kill the worker) after this instant; nil waits forever.
    /// - Throws: `CRIUError` `.workerDied` on end of stream, `.timedOut`, `.transport`,
    ///   `.protocolViolation` for undecodable bytes.
    public func receive(
        for request: CRIURequestType,
        deadline: ContinuousClock.Instant? = nil
    ) throws(CRIUError)
        -> (CRIUResponse, [SharedDescriptor])
    {
        do {
            try waitReadable(deadline: deadline)
        } catch {
            var e = error
            e.request = request
            throw e
        }
        let size: Int
        let sock = socketNumber
        do {
            size = try systemCall("recv(MSG_PEEK|MSG_TRUNC)") {
                Glibc.recv(sock, nil, 0, CInt(MSG_PEEK) | CInt(MSG_TRUNC))
            }
        } catch {
            let died = error.errno == .connectionReset
            throw CRIUError(
                code: died ? .workerDied : .transport,
                request: request,
                message: "peeking criu swrk \(workerPID): \(error)\(died ? exitDescription() : "")"
            )
        }
        if size == 0 {
            throw CRIUError(
                code: .workerDied,
                request: request,
                message: "criu swrk \(workerPID) closed the connection before answering \(request)\(exitDescription())"
            )
        }
        var buffer = [UInt8](repeating: 0, count: size)
        let maxFDs = 8
        let controlSize = Self.cmsgSpace(maxFDs * MemoryLayout<CInt>.size)
        var control = [UInt8](repeating: 0, count: controlSize)
        var fds: [SharedDescriptor] = []
        let result: Result<Int, SystemError> = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { ctl in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    let r = Result { () throws(SystemError) -> Int in
                        try systemCall("recvmsg") { recvmsg(sock, &msg, CInt(MSG_CMSG_CLOEXEC)) }
                    }
                    if case .success = r {
                        fds = Self.rights(in: UnsafeRawBufferPointer(rebasing: ctl[0..<Int(msg.msg_controllen)]))
                    }
                    return r
                }
            }
        }
        let received: Int
        switch result {
        case .success(let n): received = n
        case .failure(let error):
            throw CRIUError(
                code: .transport,
                request: request,
                message: "receiving from criu swrk \(workerPID): \(error)"
            )
        }
        do {
            return (try CRIUResponse(decoding: buffer[0..<received]), fds)
        } catch {
            for fd in fds { fd.close() }
            throw CRIUError(
                code: .protocolViolation,
                request: request,
                message: "criu swrk \(workerPID) sent \(received) bytes that are not a criu_resp: \(error)"
            )
        }
    }

    private func waitReadable(deadline: ContinuousClock.Instant?) throws(CRIUError) {
        let sock = socketNumber
        while true {
            var pfd = pollfd(fd: sock, events: Int16(POLLIN), revents: 0)
            var timeout: CInt = -1
            if let deadline {
                let left = deadline - .now
                if left <= .zero {
                    kill()
                    throw CRIUError(
                        code: .timedOut,
                        request: .empty,
                        message: "criu swrk \(workerPID) did not answer in time; killed it"
                    )
                }
                timeout = CInt(
                    min(
                        left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1,
                        60_000
                    )
                )
            }
            // Not the retrying funnel: after EINTR the loop recomputes the time left.
            let r = Glibc.poll(&pfd, 1, timeout)
            if r > 0 { return }
            if r == -1 && currentErrno != EINTR {
                throw CRIUError(
                    code: .transport,
                    request: .empty,
                    message: "poll on criu swrk \(workerPID): \(Errno(rawValue: currentErrno))"
                )
            }
        }
    }

    /// ", it exited with status N" / ", it was killed by signal N", after reaping, or "".
    private func exitDescription() -> String {
        guard !reaped else { return "" }
        var status: CInt = 0
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            let r = waitpid(workerPID, &status, WNOHANG)
            if r == workerPID {
                reaped = true
                let sig = status & 0x7f
                return sig == 0 ? ", it exited with status \((status >> 8) & 0xff)" : ", it was killed by signal \(sig)"
            }
            if r == -1 { return "" }
            usleep(1000)
        }
        return ""
    }

    // cmsg layout on Linux: cmsghdr (len: size_t, level: int, type: int) then data, aligned to size_t.
    private static func cmsgAlign(_ n: Int) -> Int {
        let a = MemoryLayout<Int>.size
        return (n + a - 1) & ~(a - 1)
    }

    private static func cmsgSpace(_ n: Int) -> Int { cmsgAlign(MemoryLayout<cmsghdr>.size) + cmsgAlign(n) }

    /// The descriptors of SCM_RIGHTS messages in `control`, each with its own owner.
    private static func rights(in control: UnsafeRawBufferPointer) -> [SharedDescriptor] {
        var out: [SharedDescriptor] = []
        var offset = 0
        let header = MemoryLayout<cmsghdr>.size
        while offset + header <= control.count {
            let hdr = control.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
            let len = Int(hdr.cmsg_len)
            guard len >= header, offset + len <= control.count else { break }
            if hdr.cmsg_level == SOL_SOCKET && hdr.cmsg_type == CInt(SCM_RIGHTS) {
                let dataStart = offset + cmsgAlign(header)
                var p = dataStart
                while p + MemoryLayout<CInt>.size <= offset + len {
                    let fd = control.loadUnaligned(fromByteOffset: p, as: CInt.self)
                    out.append(SharedDescriptor(OwnedDescriptor(adopting: fd)))
                    p += MemoryLayout<CInt>.size
                }
            }
            offset += cmsgAlign(len)
        }
        return out
    }

    // MARK: request/notify loop

    /// Sends `request`, answers every notification (calling the caller's hook for its script
    /// name) and returns CRIU's final answer.
    ///
    /// - Parameters:
    ///   - request: the request to send.
    ///   - hooks: caller hooks by script name.
    ///   - logPath: CRIU's log file, for the tail in errors.
    ///   - deadline: after this instant the request is abandoned and `.timedOut` thrown. With
    ///     notify scripts on, CRIU is stopped at its next notification (answered with failure, so
    ///     CRIU aborts and resumes the tasks, as for a failing hook) and killed only if none comes
    ///     within ``abortGrace``: killing CRIU while its parasite runs inside a task can kill the task.
    ///     Without notifications the worker is killed at the deadline. A request that completes in
    ///     the grace without another notification is returned as it is (it did not run into harm).
    /// - Throws: `CRIUError`: `.requestFailed` (with cr_errno, cr_errmsg, log tail), `.workerDied`,
    ///   `.hookFailed`, `.protocolViolation`, `.transport`, `.timedOut`.
    public func exchange(
        _ request: CRIURequest,
        hooks: CRIUHooks = CRIUHooks(),
        logPath: FilePath? = nil,
        deadline: ContinuousClock.Instant? = nil
    ) throws(CRIUError) -> CRIUExchange {
        let start = ContinuousClock.now
        let notifies = request.options?.notifyScripts == true
        let killAt = deadline.map { notifies ? $0 + Self.abortGrace : $0 }
        var abortedAt: String?
        var phases: [CRIUPhase] = []
        var hookError: (String, any Error)?
        var notifiedPID: Int32?
        func decorate(_ e: CRIUError) -> CRIUError {
            var e = e
            e.request = request.type
            e.restoredPID = notifiedPID
            if let logPath {
                e.logPath = logPath
                if e.logTail.isEmpty { e.logTail = tailOfFile(logPath, lines: 12) }
                // CRIU's cr_errmsg is the first error it logged, often a harmless one; the last
                // "Error (" line of the log names the reason the request failed.
                if e.code == .requestFailed,
                    let last = tailOfFile(logPath, lines: 400).last(where: {
                        $0.contains("Error (") && !$0.hasSuffix("FAILED.")
                    })
                {
                    let reason = last.drop { $0 != "E" }
                    if !e.message.contains(reason) { e.message = "\(reason) (CRIU's first error: \(e.message))" }
                }
            }
            return e
        }
        do throws(CRIUError) {
            try send(request)
            while true {
                let (response, fds) = try receive(for: request.type, deadline: killAt)
                if response.type == .notify {
                    let script = response.notify?.script ?? ""
                    let elapsed = ContinuousClock.now - start
                    phases.append(CRIUPhase(script: script, elapsed: elapsed))
                    if let pid = response.notify?.pid, pid > 0 { notifiedPID = pid }
                    if let deadline, ContinuousClock.now > deadline, abortedAt == nil {
                        // Past the deadline: stop CRIU here, where it can still undo its work.
                        abortedAt = script
                        for fd in fds { fd.close() }
                        try send(CRIURequest(type: .notify, notifySuccess: false))
                        continue
                    }
                    var ok = true
                    if let hook = hooks[script] {
                        let note = CRIUNotification(
                            script: script,
                            pid: response.notify?.pid,
                            workerPID: workerPID,
                            elapsed: elapsed,
                            receivedFD: fds.first
                        )
                        do { try hook(note) } catch {
                            ok = false
                            hookError = (script, error)
                        }
                    }
                    for fd in fds { fd.close() }
                    try send(CRIURequest(type: .notify, notifySuccess: ok))
                    continue
                }
                for fd in fds { fd.close() }
                if let script = abortedAt, !response.success {
                    throw CRIUError(
                        code: .timedOut,
                        request: request.type,
                        message:
                            "criu swrk \(workerPID) did not finish in time; stopped at its \(script) notification, CRIU aborted"
                    )
                }
                if let (script, error) = hookError, !response.success {
                    throw CRIUError(
                        code: .hookFailed,
                        request: request.type,
                        criuErrno: response.crErrno.flatMap(Errno.init),
                        message: "the \(script) hook failed: \(error); CRIU aborted"
                    )
                }
                guard response.type == request.type else {
                    throw CRIUError(
                        code: .protocolViolation,
                        request: request.type,
                        message: "expected a \(request.type) answer, got \(response.type)"
                    )
                }
                guard response.success else {
                    let errno = response.crErrno.flatMap { $0 == 0 ? nil : Errno(rawValue: $0) }
                    throw CRIUError(
                        code: .requestFailed,
                        request: request.type,
                        criuErrno: errno,
                        message: response.crErrmsg ?? "CRIU reported failure without a message"
                    )
                }
                var x = CRIUExchange(response: response, phases: phases, duration: ContinuousClock.now - start)
                x.notifiedPID = notifiedPID
                if let (script, error) = hookError { x.hookFailures = ["\(script): \(error)"] }
                return x
            }
        } catch {
            if let (script, herr) = hookError, error.code == .workerDied || error.code == .requestFailed {
                throw decorate(
                    CRIUError(
                        code: .hookFailed,
                        request: request.type,
                        criuErrno: error.criuErrno,
                        message: "the \(script) hook failed: \(herr); CRIU aborted (\(error.message))"
                    )
                )
            }
            throw decorate(error)
        }
    }
}
