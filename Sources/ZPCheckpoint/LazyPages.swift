import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A running `criu lazy-pages` daemon: it serves a lazy restore's memory on demand (userfaultfd)
/// from local images or from a page server, and exits once every page is in place or the
/// restored tree is gone.
///
/// Start it, wait for it to be ready (it writes a byte to its status pipe), then call
/// `Checkpointer.restore` with `lazyPages = true` and the same work directory: CRIU finds the
/// daemon's `lazy-pages.socket` there. `stop()` (or deinit) kills and reaps it.
///
/// A daemon that ends before it served every page (killed, crashed) would leave the restored
/// process with zero-filled pages where its memory was not pushed yet: the kernel answers the
/// faults of a userfaultfd no one holds any more with zero pages. So the caller holds copies of
/// the daemon's userfaultfds while it serves (decision 0069): ``holdFaultHandlers(treeAt:timeout:)``
/// at CRIU's `post-restore` (``CRIUHooks/holdingFaultHandlers(of:)``), ``refreshFaultHandlers()``
/// while it serves (``waitForExit(timeout:)`` does it), and after the daemon ended, with
/// ``termination`` (or, when another waiter reaped it, ``logShowsEveryProcessServed(_:)``):
/// clean, ``releaseFaultHandlers()``; early, kill the restored processes first (they wait on
/// their missing pages meanwhile), then release.
public final class LazyPagesDaemon {
    /// How a daemon process ended, decoded from its wait status.
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        /// It exited with this code: 0 once every restored process got all its pages (or exited).
        case exited(code: Int32)
        /// A signal ended it.
        case signalled(signal: Int32)

        /// Decodes a `waitpid` status word (WIFEXITED/WEXITSTATUS/WTERMSIG by hand: C macros).
        public init(waitStatus status: CInt) {
            let signal = status & 0x7f
            self = signal == 0 ? .exited(code: (status >> 8) & 0xff) : .signalled(signal: signal)
        }

        /// Whether the daemon finished its work: exit code 0.
        public var isClean: Bool { self == .exited(code: 0) }

        /// "exit code N" or "signal N".
        public var description: String {
            switch self {
            case .exited(let code): return "exit code \(code)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    /// The daemon's pid.
    public let pid: Int32
    /// The work directory holding `lazy-pages.socket` and `lazy-pages.log`.
    public let workDir: FilePath
    /// The daemon's log (`lazy-pages.log` in ``workDir``).
    public var logPath: FilePath { workDir.appending("lazy-pages.log") }
    /// How the daemon ended, once this object reaped it (``stop()`` included: then a SIGKILL of our
    /// own). Stays nil while it runs, and when another waiter (a shim's `wait4(-1)` reaper) reaped
    /// it first: that waiter has the status.
    public private(set) var termination: Termination?
    private var reaped = false
    /// Copies of the daemon's userfaultfds, by the daemon's descriptor number (decision 0069).
    private var held: [CInt: SharedDescriptor] = [:]
    /// The daemon's pidfd, opened by the first hold (copies are made through it).
    private var processHandle: SharedDescriptor?
    /// When the hold was last refreshed.
    private var refreshedAt: ContinuousClock.Instant?

    /// Starts `criu lazy-pages` and returns once it reports ready.
    ///
    /// - Parameters:
    ///   - criuPath: the CRIU binary.
    ///   - imagesDir: the dump's image directory.
    ///   - workDir: where the socket and log go; nil uses `imagesDir`.
    ///   - pageServer: fetch pages from this page server instead of local images.
    ///   - readyTimeout: how long to wait for the status byte.
    /// - Throws: `CRIUError` `.spawnFailed` when it cannot start, `.workerDied` when it exits
    ///   before becoming ready (with the log tail), `.timedOut`.
    public init(
        criuPath: FilePath = Checkpointer.defaultCRIUPath,
        imagesDir: FilePath,
        workDir: FilePath? = nil,
        pageServer: CRIUPageServerInfo? = nil,
        readyTimeout: Duration = .seconds(30)
    ) throws(CRIUError) {
        let work = workDir ?? imagesDir
        self.workDir = work
        let pipe: PipeEnds
        do {
            pipe = try OwnedDescriptor.pipe()
        } catch {
            throw CRIUError(code: .spawnFailed, request: .empty, message: "pipe for criu lazy-pages: \(error)")
        }
        let readEnd = pipe.readEnd
        let writeEnd = SharedDescriptor(pipe.writeEnd)  // closed once the daemon has its copy
        var args = [
            "lazy-pages", "--images-dir", imagesDir.string, "--work-dir", work.string, "--status-fd", "3",
            "-v4", "--log-file", "lazy-pages.log",
        ]
        if let ps = pageServer {
            args += ["--page-server", "--address", ps.address ?? "127.0.0.1", "--port", String(ps.port ?? 27027)]
        }
        do {
            pid = try ChildProcess.spawn(criuPath, arguments: args, descriptors: [writeEnd])
        } catch {
            throw CRIUError(
                code: .spawnFailed,
                request: .empty,
                message: "cannot start \(criuPath) lazy-pages: \(error)"
            )
        }
        writeEnd.close()
        let log = work.appending("lazy-pages.log")
        var pfd = pollfd(fd: readEnd.rawValue, events: Int16(POLLIN), revents: 0)
        let ms = CInt(readyTimeout.components.seconds * 1000)
        let r: CInt = (try? systemCall("poll", "criu lazy-pages status pipe") { poll(&pfd, 1, ms) }) ?? -1
        var byte: UInt8 = 1
        let n = r > 0 ? read(readEnd.rawValue, &byte, 1) : -1
        guard n == 1 && byte == 0 else {
            _ = kill(pid, SIGKILL)
            ChildProcess.wait(pid)
            reaped = true
            throw CRIUError(
                code: r == 0 ? .timedOut : .workerDied,
                request: .empty,
                message: "criu lazy-pages for \(imagesDir) did not become ready",
                logPath: log,
                logTail: tailOfFile(log)
            )
        }
    }

    deinit { stop() }

    /// Waits up to `timeout` for the daemon to finish on its own (all pages served); returns
    /// whether it did. A zero timeout checks once without waiting. While it runs, the hold on its
    /// userfaultfds is refreshed (at most every 50 ms, ``refreshFaultHandlers()``).
    public func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if checkExited() { return true }
            if !held.isEmpty, refreshedAt.map({ ContinuousClock.now - $0 >= .milliseconds(50) }) ?? true {
                refreshFaultHandlers()
            }
            if ContinuousClock.now >= deadline { return false }
            usleep(5000)
        }
    }

    // MARK: the hold on the daemon's userfaultfds (decision 0069)

    /// How many of the daemon's userfaultfds are held.
    public var heldFaultHandlers: Int { held.count }

    /// Holds copies of the daemon's userfaultfds, one per restored process of the tree at `root`,
    /// so that the daemon's end can never release the restored processes' missing pages as zero
    /// pages: call it at CRIU's `post-restore` notification (every task has registered its lazy
    /// memory and sent its userfaultfd to the daemon; none runs yet, and a failure here makes CRIU
    /// abort the restore). Waits up to `timeout` for the daemon to take every process's
    /// userfaultfd (it reads them from its socket one by one).
    /// - Returns: the number held; fewer than the processes when the daemon did not take them all
    ///   in time (the caller logs it).
    /// - Throws: `CRIUError` `.workerDied` when the daemon ended, or holds none after `timeout`.
    public func holdFaultHandlers(treeAt root: Int32, timeout: Duration) throws(CRIUError) -> Int {
        let processes = PreparedContainerRestore.processTree(root).filter { !ProcessDescriptors.isEndingOrGone($0) }
        let deadline = ContinuousClock.now + timeout
        while true {
            if checkExited() {
                throw CRIUError(
                    code: .workerDied,
                    request: .restore,
                    message: "criu lazy-pages (pid \(pid)) ended during the restore, before the restored processes resumed"
                        + (termination.map { " (\($0))" } ?? ""),
                    logPath: logPath,
                    logTail: tailOfFile(logPath)
                )
            }
            refreshFaultHandlers()
            if held.count >= processes.count { return held.count }
            if ContinuousClock.now >= deadline {
                guard held.isEmpty else { return held.count }
                throw CRIUError(
                    code: .workerDied,
                    request: .restore,
                    message: "criu lazy-pages (pid \(pid)) took no userfaultfd of the \(processes.count) restored "
                        + "processes within \(timeout)",
                    logPath: logPath,
                    logTail: tailOfFile(logPath)
                )
            }
            usleep(1000)
        }
    }

    /// Brings the hold up to date with the daemon's table while the daemon runs: a userfaultfd
    /// the daemon closed itself (its process got every page, or exited) is released, and one it
    /// took since (a restored process forked: the child's) is held. Does nothing once the daemon
    /// ends or while it exits: what it held then stays held until ``releaseFaultHandlers()``.
    public func refreshFaultHandlers() {
        refreshedAt = .now
        guard !reaped else { return }
        let numbers = ProcessDescriptors.numbers(of: pid, linkingTo: ProcessDescriptors.userfaultfdLink)
        // Read after the listing: a table read while the daemon exits lacks what the kernel closed.
        guard !ProcessDescriptors.isEndingOrGone(pid) else { return }
        let present = Set(numbers)
        for (number, copy) in held
        where !present.contains(number)
            || ProcessDescriptors.sameFile(copy.rawValue, as: number, of: pid) == false
        {
            copy.close()
            held[number] = nil
        }
        if processHandle == nil {
            if let handle = try? ListeningSockets.processDescriptor(pid) { processHandle = SharedDescriptor(handle) }
        }
        guard let handle = processHandle else { return }
        for number in numbers where held[number] == nil {
            let copy: OwnedDescriptor
            do {
                copy = try ProcessDescriptors.copy(descriptor: number, ofProcess: handle)
            } catch {
                continue  // closed meanwhile
            }
            held[number] = SharedDescriptor(copy)
        }
    }

    /// Closes the held copies: call it once the daemon finished cleanly, or after the restored
    /// processes were killed. Idempotent.
    public func releaseFaultHandlers() {
        for copy in held.values { copy.close() }
        held = [:]
        processHandle?.close()
        processHandle = nil
    }

    /// Moves the held copies out (the caller releases them later, e.g. after killing the restored
    /// processes of a daemon that ended early); nothing is held here afterwards.
    public func takeFaultHandlers() -> [SharedDescriptor] {
        let copies = Array(held.values)
        held = [:]
        processHandle?.close()
        processHandle = nil
        return copies
    }

    /// Whether the daemon has exited. Also true when another waiter of the process (a shim's
    /// `wait4(-1)` reaper) reaped it first: `waitpid` then fails with ECHILD.
    private func checkExited() -> Bool {
        guard !reaped else { return true }
        var status: CInt = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            termination = Termination(waitStatus: status)
            reaped = true
            return true
        }
        if r == -1 {
            reaped = true
            return true
        }
        return false
    }

    /// Kills the daemon (if still running) and reaps it, then releases the held userfaultfds
    /// (so kill the restored processes first when they may still lack pages); idempotent. A
    /// daemon that exited (or was reaped by another waiter) is not signalled: its pid may belong
    /// to another process.
    public func stop() {
        defer { releaseFaultHandlers() }
        guard !checkExited() else { return }
        _ = kill(pid, SIGKILL)
        var status: CInt = 0
        let r = (try? systemCall("waitpid", "pid \(pid)") { waitpid(pid, &status, 0) }) ?? -1
        if r == pid { termination = Termination(waitStatus: status) }  // ECHILD: another waiter has it
        reaped = true
    }

    /// Whether a `criu lazy-pages` log (`-v4`) shows that every restored process it took on got
    /// all its pages: each `Received PID: <pid>` line has a later `<pid>-<fd>: UFFD transferred
    /// pages: (copied/total)` summary, which CRIU writes when a process has nothing left to
    /// transfer (all pages pushed, or the process exited). A daemon killed midway never writes
    /// the summary. False when the log is missing or names no process.
    public static func logShowsEveryProcessServed(_ log: FilePath) -> Bool {
        guard let bytes = try? Files.read(log, limit: 256 << 20) else { return false }
        return logShowsEveryProcessServed(text: String(decoding: bytes, as: UTF8.self))
    }

    /// ``logShowsEveryProcessServed(_:)`` on the log's text.
    public static func logShowsEveryProcessServed(text: String) -> Bool {
        var received: Set<Substring> = []
        var summarised: Set<Substring> = []
        for line in text.split(separator: "\n") {
            if let r = line.firstRange(of: "Received PID: ") {
                let rest = line[r.upperBound...]
                received.insert(rest.prefix { $0.isNumber })
            } else if let r = line.firstRange(of: ": UFFD transferred pages:") {
                // "(00.123456) <pid>-<fd>: UFFD transferred pages: (n/m)"
                let tag = line[..<r.lowerBound].split(separator: " ").last ?? ""
                summarised.insert(tag.prefix { $0.isNumber })
            }
        }
        return !received.isEmpty && received.isSubset(of: summarised)
    }
}

extension CRIUHooks {
    /// Adds the hold on `daemon`'s userfaultfds (decision 0069) to CRIU's `post-restore`
    /// notification of a lazy restore, before any hook already set for it: the restore is aborted
    /// when the daemon ended (``LazyPagesDaemon/holdFaultHandlers(treeAt:timeout:)``).
    public mutating func holdingFaultHandlers(of daemon: LazyPagesDaemon, timeout: Duration = .seconds(5)) {
        let then = self["post-restore"]
        self["post-restore"] = { note in
            guard let root = note.pid else {
                throw CRIUError(
                    code: .protocolViolation,
                    request: .restore,
                    message: "CRIU's post-restore notification named no restored process"
                )
            }
            _ = try daemon.holdFaultHandlers(treeAt: root, timeout: timeout)
            try then?(note)
        }
    }
}
