import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// An error while setting up a process's stdio.
public struct StdioError: Error, Sendable, CustomStringConvertible {
    /// The stdio URI or path containerd gave.
    public var target: String
    /// Why it failed.
    public var reason: String

    public var description: String { "stdio \(target): \(reason)" }
}

/// The stdio of one container process: pipes the shim owns, copied to what containerd asked for.
///
/// The container side of each pipe goes to runc (and so to the process). The shim keeps its own copy
/// of the container side until the process exits, because a restored process must be given the very
/// same pipes again (CRIU cannot dump a descriptor that points at a host file). Destinations:
/// a FIFO path (opened read-write, so that opening never blocks and a missing reader is no error),
/// `file:///path` (appended to), or empty (output discarded, stdin at end of file).
/// Copies run on NIO pipe channels.
public final class ProcessIO: Sendable {
    /// Container-side descriptors, handed to runc (and to CRIU on a restore).
    let containerStdin: SharedDescriptor
    let containerStdout: SharedDescriptor
    let containerStderr: SharedDescriptor
    /// What feeds stdin, if containerd gave a stdin FIFO.
    private let stdin: StdinPump?
    private let outputCopies: [EventLoopFuture<Void>]

    private init(
        containerStdin: SharedDescriptor,
        containerStdout: SharedDescriptor,
        containerStderr: SharedDescriptor,
        stdin: StdinPump?,
        outputCopies: [EventLoopFuture<Void>]
    ) {
        self.containerStdin = containerStdin
        self.containerStdout = containerStdout
        self.containerStderr = containerStderr
        self.stdin = stdin
        self.outputCopies = outputCopies
    }

    /// The descriptors to give runc.
    var runcStdio: RuncStdio {
        RuncStdio(stdin: containerStdin, stdout: containerStdout, stderr: containerStderr)
    }

    /// Creates the pipes and starts copying.
    ///
    /// - Parameters:
    ///   - stdin: containerd's stdin FIFO path, or empty.
    ///   - stdout: stdout FIFO path, `file://` URI, or empty.
    ///   - stderr: stderr FIFO path, `file://` URI, or empty.
    ///   - group: Event loops for the copies.
    ///   - owner: The uid and gid the pipes get (containerd's `IoUid`/`IoGid` runc options, for a
    ///     process that runs as another user and reopens `/proc/self/fd/1`); nil leaves them root's.
    /// - Throws: ``StdioError`` naming the target that failed.
    public static func open(
        stdin: String,
        stdout: String,
        stderr: String,
        group: any EventLoopGroup,
        owner: (uid: UInt32, gid: UInt32)? = nil
    ) async throws -> ProcessIO {
        let inPipe = try OwnedDescriptor.pipe()
        let outPipe = try OwnedDescriptor.pipe()
        let errPipe = try OwnedDescriptor.pipe()
        if let owner {
            // Both ends of every pipe, as containerd-shim-runc-v2 does (`runc.NewPipeIO(uid, gid)`).
            for fd in [
                inPipe.readEnd.rawValue, inPipe.writeEnd.rawValue, outPipe.readEnd.rawValue, outPipe.writeEnd.rawValue,
                errPipe.readEnd.rawValue, errPipe.writeEnd.rawValue,
            ] {
                do {
                    try systemCall("fchown", "stdio pipe") { fchown(fd, owner.uid, owner.gid) }
                } catch {
                    throw StdioError(
                        target: "stdio pipes",
                        reason: "cannot give them to \(owner.uid):\(owner.gid): \(error)"
                    )
                }
            }
        }
        let containerStdin = SharedDescriptor(inPipe.readEnd)
        let stdinWriteEnd = inPipe.writeEnd
        var stdinPump: StdinPump?
        if stdin.isEmpty {
            try? stdinWriteEnd.close()
        } else {
            guard Files.isFIFO(FilePath(stdin)) else { throw StdioError(target: stdin, reason: "stdin is not a FIFO") }
            stdinPump = StdinPump(fifo: stdin, into: .pipe(SharedDescriptor(stdinWriteEnd)), group: group)
        }
        let containerStdout = SharedDescriptor(outPipe.writeEnd)
        let containerStderr = SharedDescriptor(errPipe.writeEnd)
        var copies: [EventLoopFuture<Void>] = []
        for (target, readEnd) in [
            (stdout, SharedDescriptor(outPipe.readEnd)), (stderr, SharedDescriptor(errPipe.readEnd)),
        ] {
            copies.append(try await startOutputCopy(to: target, from: readEnd, group: group))
        }
        return ProcessIO(
            containerStdin: containerStdin,
            containerStdout: containerStdout,
            containerStderr: containerStderr,
            stdin: stdinPump,
            outputCopies: copies
        )
    }

    /// Starts copying `readEnd` (a pipe, or a pty master) to `target` (a FIFO path, a `file://` URI,
    /// or nowhere when empty); the copy ends at end of file or on a read error (a pty master reads
    /// `EIO` once no process has the terminal open).
    /// - Returns: the copy's end.
    /// - Throws: ``StdioError`` naming the target.
    static func startOutputCopy(
        to target: String,
        from readEnd: SharedDescriptor,
        group: any EventLoopGroup
    ) async throws -> EventLoopFuture<Void> {
        let bootstrap = NIOPipeBootstrap(group: group).channelOption(.allowRemoteHalfClosure, value: true)
        let channel: any Channel
        if target.isEmpty {
            channel = try await bootstrap.channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(StdioForwarder(sink: .discard))
                }
            }.takingOwnershipOfDescriptor(input: readEnd.take()!.disown()).get()
        } else if target.hasPrefix("file://") {
            let path = String(target.dropFirst("file://".count))
            let file: SharedDescriptor
            do {
                file = SharedDescriptor(
                    try OwnedDescriptor.open(FilePath(path), O_WRONLY | O_CREAT | O_APPEND, mode: 0o640)
                )
            } catch {
                throw StdioError(target: target, reason: "\(error)")
            }
            channel = try await bootstrap.channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(StdioForwarder(sink: .file(file)))
                }
            }.takingOwnershipOfDescriptor(input: readEnd.take()!.disown()).get()
        } else if target.contains("://") {
            throw StdioError(target: target, reason: "only FIFO paths and file:// URIs are supported")
        } else {
            let fifo: OwnedDescriptor
            do { fifo = try OwnedDescriptor.open(FilePath(target), O_RDWR) } catch {
                throw StdioError(target: target, reason: "\(error)")
            }
            let output = fifo.disown()
            channel = try await bootstrap.channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(StdioForwarder(sink: .channel))
                }
            }.takingOwnershipOfDescriptors(input: readEnd.take()!.disown(), output: output).get()
        }
        return channel.closeFuture
    }

    /// Closes the shim's copies of the container-side descriptors (after the process exited, or
    /// right after start for exec processes), so that the copies end when the process's side closes.
    public func releaseContainerSide() {
        containerStdin.close()
        containerStdout.close()
        containerStderr.close()
    }

    /// Stops feeding stdin: the process reads end of file (CloseIO).
    public func closeStdin() {
        stdin?.close()
    }

    /// Waits until the output copies have seen end of file, at most `timeout`.
    ///
    /// The deadline is an event loop timer, not a cancelled task: waiting on a future cannot be
    /// cancelled, so a task group would wait for the copies anyway (Delete of a task that never
    /// started hung there, its pipes still open).
    public func waitOutputCopied(timeout: Duration = .seconds(2)) async {
        guard let loop = outputCopies.first?.eventLoop else { return }
        let done = loop.makePromise(of: Void.self)
        let timer = loop.scheduleTask(
            in: .nanoseconds(
                Int64(timeout.components.seconds) * 1_000_000_000
                    + timeout.components.attoseconds / 1_000_000_000
            )
        ) { done.succeed(()) }
        EventLoopFuture.andAllComplete(outputCopies, on: loop).whenComplete { _ in
            timer.cancel()
            done.succeed(())  // a second completion (after the timer) is ignored
        }
        try? await done.futureResult.get()
    }

    /// Ends everything: stdin, the output copies and the container side.
    public func close() {
        releaseContainerSide()
        stdin?.close()
    }
}

/// Copies containerd's stdin FIFO into the process's stdin pipe until the FIFO's writer closes it
/// (end of input) or CloseIO.
///
/// The FIFO is opened read-only so that the writer's close is seen as end of file; a read-only open
/// blocks until a writer appears, so it happens on its own thread and the copy starts when it returns.
/// Closing before a writer came unblocks that open by opening the FIFO for writing once.
final class StdinPump: Sendable {
    /// Where the FIFO's bytes go.
    enum Target: Sendable {
        /// The write end of the process's stdin pipe (closed at the FIFO's end of file).
        case pipe(SharedDescriptor)
        /// A terminal's master (kept open at the FIFO's end of file: the terminal stays).
        case terminal(TerminalInput)
    }

    private enum State {
        case waitingForWriter(target: Target)
        case connected(any Channel)
        case closed
    }

    private let fifo: String
    private let state: Mutex<State>
    /// The terminal input, when the target is a terminal.
    let terminalInput: TerminalInput?

    init(fifo: String, into target: Target, group: any EventLoopGroup) {
        self.fifo = fifo
        if case .terminal(let input) = target { terminalInput = input } else { terminalInput = nil }
        state = Mutex(.waitingForWriter(target: target))
        Threads.startDetached { [self] in
            // Blocks until a writer opens the FIFO (or `close()` does, to unblock it).
            guard let input = try? OwnedDescriptor.open(FilePath(fifo), O_RDONLY) else { return }
            let target: Target? = state.withLock { state in
                guard case .waitingForWriter(let target) = state else { return nil }
                return target
            }
            let bootstrap = NIOPipeBootstrap(group: group).channelOption(.allowRemoteHalfClosure, value: true)
            let channel: EventLoopFuture<any Channel>
            switch target {
            case nil:
                return  // closed meanwhile: `input` closes as it goes
            case .terminal(let terminal)?:
                channel = bootstrap.channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(StdioForwarder(sink: .terminal(terminal)))
                    }
                }.takingOwnershipOfDescriptor(input: input.disown())
            case .pipe(let pipe)?:
                guard let output = pipe.take() else { return }
                channel = bootstrap.channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(StdioForwarder(sink: .channel))
                    }
                }.takingOwnershipOfDescriptors(input: input.disown(), output: output.disown())
            }
            channel.whenSuccess { channel in
                let closeNow = self.state.withLock { state -> Bool in
                    if case .closed = state { return true }
                    state = .connected(channel)
                    return false
                }
                if closeNow { channel.close(promise: nil) }
            }
        }
    }

    /// Stops feeding stdin; the process reads end of file.
    func close() {
        let action: (any Channel)?? = state.withLock { state in
            switch state {
            case .waitingForWriter(let target):
                if case .pipe(let pipe) = target { pipe.close() }
                state = .closed
                return .some(nil)
            case .connected(let channel):
                state = .closed
                return .some(channel)
            case .closed:
                return nil
            }
        }
        switch action {
        case .some(.some(let channel)):
            channel.close(promise: nil)
        case .some(.none):
            // Unblock the opener thread (a reader is waiting, so this open succeeds at once).
            _ = try? OwnedDescriptor.open(FilePath(fifo), O_WRONLY | O_NONBLOCK)
        case .none:
            break
        }
    }
}

/// Forwards bytes read from a pipe to the channel's output, a file, or nowhere; closes the channel
/// once the input reached end of file and the last write finished.
final class StdioForwarder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Sink {
        case channel
        case file(SharedDescriptor)
        case terminal(TerminalInput)
        case discard
    }

    private let sink: Sink
    private var lastWrite: EventLoopFuture<Void>?

    init(sink: Sink) {
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch sink {
        case .channel:
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(data, promise: promise)
            lastWrite = promise.futureResult
        case .file(let file):
            let buffer = unwrapInboundIn(data)
            try? file.withOwner { (file) throws(SystemError) in try file.writeAll(buffer.readableBytesView) }
        case .terminal(let terminal):
            terminal.write(unwrapInboundIn(data).readableBytesView)
        case .discard:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .file(let file) = sink { file.close() }
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension StdioForwarder: Sendable {}
