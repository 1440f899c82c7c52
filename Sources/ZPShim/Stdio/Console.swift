import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

// Terminals (decision 0043): runc makes the pty of a `terminal: true` process and sends its master
// to the shim over `--console-socket`; the shim copies containerd's stdin FIFO into the master and
// the master into the stdout FIFO, and applies ResizePty to it. After a restore CRIU hands over a
// new master (its `orphan-pts-master` notification), which replaces the old one.

/// The socket runc sends a new terminal's master to (`runc create|exec --console-socket PATH`): a
/// listening unix socket in a private folder (mode 0700) under the temporary directory, because
/// bundle paths are too long for `sun_path`.
final class ConsoleSocket: Sendable {
    /// The socket's path, for runc.
    let path: String
    private let directory: String
    private let listener: SharedDescriptor

    /// Makes the folder and the listening socket.
    /// - Throws: ``SystemError``.
    init() throws(SystemError) {
        let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/zp-pty-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw SystemError(call: "mkdtemp", subject: base, errno: Errno(rawValue: errno)) }
        directory = String(cString: template)
        path = directory + "/pty.sock"
        do {
            listener = SharedDescriptor(try UnixSockets.listen(at: path, backlog: 1))
        } catch {
            _ = rmdir(directory)
            throw error
        }
    }

    /// The pty master runc sent (call after `runc create`/`exec` returned: runc has connected and
    /// sent it by then, so this does not wait long).
    /// - Throws: ``SystemError`` when nothing arrived within `timeout`, or the message held no descriptor.
    func receiveMaster(timeout: Duration = .seconds(10)) throws(SystemError) -> SharedDescriptor {
        let descriptors = try listener.withOwner { (l) throws(SystemError) -> [SharedDescriptor] in
            let connection = try UnixSockets.accept(l, timeout: timeout)
            return try UnixSockets.receive(connection, timeout: timeout).descriptors
        }
        guard let master = descriptors.first else {
            throw SystemError(
                call: "recvmsg",
                subject: "runc's console socket message carried no descriptor",
                errno: .invalidArgument
            )
        }
        for extra in descriptors.dropFirst() { extra.close() }
        return master
    }

    /// Closes the socket and removes it and its folder.
    func remove() {
        listener.close()
        unlink(path)
        rmdir(directory)
    }
}

/// The terminal of one process: the pty master, the copy of containerd's stdin FIFO into it and
/// the copy of its output into the stdout FIFO, and its window size.
final class ProcessTerminal: Sendable {
    private struct State {
        var master: SharedDescriptor?
        var outputCopy: EventLoopFuture<Void>?
        /// The last size asked for (columns, rows), applied again to a new master.
        var size: (columns: UInt16, rows: UInt16)?
        var closed = false
        /// A descriptor of the stdout FIFO held open across masters (the init's terminal).
        var outputKeeper: SharedDescriptor?
    }

    private let stdoutPath: String
    private let group: any EventLoopGroup
    private let state = Mutex(State())
    private let stdin: StdinPump?

    /// Starts copying for a new terminal.
    /// - Parameters:
    ///   - master: the pty master runc sent.
    ///   - stdin: containerd's stdin FIFO, or empty.
    ///   - stdout: the stdout FIFO or `file://` URI (a terminal has no separate stderr), or empty.
    ///   - keepsOutputOpen: hold the stdout FIFO open until ``close()`` (the init's terminal): the
    ///     copy from a master ends when its process is dumped, and containerd (which reads the FIFO
    ///     for attach) must not see end of file before the restored process's master takes over.
    /// - Throws: ``StdioError`` naming the target that failed.
    init(
        master: SharedDescriptor,
        stdin: String,
        stdout: String,
        group: any EventLoopGroup,
        keepsOutputOpen: Bool = false
    ) async throws {
        self.stdoutPath = stdout
        self.group = group
        if keepsOutputOpen && !stdout.isEmpty && !stdout.contains("://") {
            do {
                // O_RDWR: a FIFO opened so never blocks (the shim never reads from it).
                let keeper = SharedDescriptor(try OwnedDescriptor.open(FilePath(stdout), O_RDWR))
                state.withLock { $0.outputKeeper = keeper }
            } catch {
                throw StdioError(target: stdout, reason: "\(error)")
            }
        }
        if stdin.isEmpty {
            self.stdin = nil
        } else {
            guard Files.isFIFO(FilePath(stdin)) else { throw StdioError(target: stdin, reason: "stdin is not a FIFO") }
            self.stdin = StdinPump(fifo: stdin, into: .terminal(TerminalInput()), group: group)
        }
        try await attach(master: master)
    }

    /// Makes `master` the terminal's master: output is copied from it, stdin goes to it, and the
    /// last window size is applied. Used at start and after a restore (CRIU's new master).
    /// - Throws: ``StdioError`` when the output copy cannot start.
    func attach(master: SharedDescriptor) async throws {
        let reading: OwnedDescriptor
        do { reading = try master.duplicate() } catch { throw StdioError(target: "pty master", reason: "\(error)") }
        let copy = try await ProcessIO.startOutputCopy(to: stdoutPath, from: SharedDescriptor(reading), group: group)
        let (old, size, closed) = state.withLock { s in
            let old = s.master
            if !s.closed {
                s.master = master
                s.outputCopy = copy
            }
            return (old, s.size, s.closed)
        }
        if closed {
            master.close()
            return
        }
        if let size {
            try? master.withOwner { (m) throws(SystemError) in
                try Terminals.setWindowSize(m, columns: size.columns, rows: size.rows)
            }
        }
        stdin?.terminalInput?.replace(master)
        if let old, old !== master { old.close() }
    }

    /// The process exited for good (not dumped): the stdout FIFO held open across masters is
    /// closed once the current output copy ended, so containerd reads end of file (containerd
    /// 2.x's client waits for it before it deletes the task).
    func outputEnds() {
        let (keeper, copy) = state.withLock { s in
            defer { s.outputKeeper = nil }
            return (s.outputKeeper, s.outputCopy)
        }
        guard let keeper else { return }
        if let copy { copy.whenComplete { _ in keeper.close() } } else { keeper.close() }
    }

    /// Sets the window size (ResizePty); remembered for a later master.
    /// - Throws: ``SystemError`` from the ioctl.
    func resize(columns: UInt16, rows: UInt16) throws(SystemError) {
        let master = state.withLock { s in
            s.size = (columns, rows)
            return s.master
        }
        try master?.withOwner { (m) throws(SystemError) in try Terminals.setWindowSize(m, columns: columns, rows: rows)
        }
    }

    /// Stops feeding stdin (CloseIO).
    func closeStdin() { stdin?.close() }

    /// Waits until the output copy ended (the process closed its side), at most `timeout`.
    func waitOutputCopied(timeout: Duration = .seconds(2)) async {
        guard let copy = state.withLock({ $0.outputCopy }) else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await copy.get() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Closes the master and stops the copies.
    func close() {
        let (master, keeper) = state.withLock { s in
            s.closed = true
            defer {
                s.master = nil
                s.outputKeeper = nil
            }
            return (s.master, s.outputKeeper)
        }
        stdin?.close()
        master?.close()
        keeper?.close()
    }
}

/// Where stdin goes for a terminal: the current pty master, replaced after a restore. Writes
/// while no process has the terminal open (scaled down) are dropped.
final class TerminalInput: Sendable {
    private let master = Mutex<SharedDescriptor?>(nil)

    /// Makes `new` the target.
    func replace(_ new: SharedDescriptor) { master.withLock { $0 = new } }

    /// Writes `bytes` to the master (small writes: keyboard input and pasted text).
    func write(_ bytes: some Collection<UInt8>) {
        guard let target = master.withLock({ $0 }) else { return }
        try? target.withOwner { (m) throws(SystemError) in try m.writeAll(bytes) }
    }
}
