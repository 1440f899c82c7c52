import Logging
import NIOCore
import NIOPosix
import SystemPackage
import ZPAPI
import ZPCore
import ZPScaleDown
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// One container of this shim: its init process, its exec processes, and every path that changes
/// them (create, start, kill, delete, state, wait, pids, update). When zeropod scales the container
/// down, its ZPScaleDown driver owns the lifecycle: this actor reports starts, execs, kills, exits
/// and deletes to it, and asks it whether the process runs.
///
/// An actor: requests for one container are serialised, and after every `await` the phase is checked
/// again, because an exit may have been delivered meanwhile.
public actor ShimContainer {
    /// Where a process is in its life.
    enum Phase: Equatable {
        /// An exec process that containerd added but has not started.
        case defined
        /// Init process after `runc create`, waiting for start.
        case created
        /// `Start` is running; an exit seen now waits until TaskStart was published.
        case starting
        /// Running.
        case running
        /// Exited with this status.
        case exited(ExitStatus)
    }

    /// One process (init, exec id "") and what is known about it.
    struct Process {
        var execID: String
        var pid: pid_t = 0
        var phase: Phase
        var io: ProcessIO?
        var stdin: String, stdout: String, stderr: String
        var terminal: Bool
        /// The process's terminal (pty master and its copies) when `terminal`.
        var console: ProcessTerminal?
        /// The OCI process spec (exec only), JSON.
        var spec: [UInt8] = []
        var pendingExit: ExitStatus?
        var waiters: [CheckedContinuation<ExitStatus, Never>] = []
    }

    /// The container id.
    public let id: String
    /// The bundle directory.
    public let bundle: String
    /// The containerd namespace.
    public let namespace: String
    /// The rootfs mounts the shim made at Create, in mounting order (unmounted at Delete).
    private let rootfsMounts: [String]
    private let runc: RuncDriver
    /// The owner of the stdio pipes (`IoUid`/`IoGid`), nil for root.
    private let ioOwner: (uid: UInt32, gid: UInt32)?
    private let publisher: EventPublisher
    private let pids: PidIndex
    private let group: any EventLoopGroup
    private let logger: Logger
    private var initProcess: Process
    private var execs: [String: Process] = [:]
    /// The scale-to-zero wiring, when zeropod scales this container down.
    nonisolated let scaleDown: ScaleDownWiring?
    /// The scale-to-zero driver, when zeropod scales this container down.
    nonisolated var driver: ScaleDownDriver? { scaleDown?.driver }

    init(
        id: String,
        bundle: String,
        namespace: String,
        rootfsMounts: [String],
        runc: RuncDriver,
        ioOwner: (uid: UInt32, gid: UInt32)?,
        publisher: EventPublisher,
        pids: PidIndex,
        group: any EventLoopGroup,
        logger: Logger,
        initProcess: Process,
        scaleDown: ScaleDownWiring? = nil
    ) {
        self.scaleDown = scaleDown
        self.ioOwner = ioOwner
        self.id = id
        self.bundle = bundle
        self.namespace = namespace
        self.rootfsMounts = rootfsMounts
        self.runc = runc
        self.publisher = publisher
        self.pids = pids
        self.group = group
        self.logger = logger
        self.initProcess = initProcess
    }

    /// Creates the container with `runc create`: mounts, stdio pipes (or, with `terminal`, a
    /// console socket for the pty runc makes), init process (not yet started).
    ///
    /// Publishes TaskCreate. - Throws: ``ShimError``, ``RuncError``, ``StdioError``, ``SystemError``.
    /// - Parameter ioOwner: the uid and gid of the stdio pipes (`IoUid`/`IoGid`), nil for root.
    static func create(
        _ request: CreateTaskRequest,
        namespace: String,
        runc: RuncDriver,
        ioOwner: (uid: UInt32, gid: UInt32)?,
        publisher: EventPublisher,
        pids: PidIndex,
        group: any EventLoopGroup,
        logger: Logger,
        scaleDown: ScaleDownWiring? = nil
    ) async throws -> ShimContainer {
        guard request.checkpoint.isEmpty else { throw ShimError.notImplemented("create from a checkpoint") }
        let rootfs = request.bundle + "/rootfs"
        var mounted: [String] = []
        if !request.rootfs.isEmpty {
            _ = mkdir(rootfs, 0o711)
            mounted = try Mounts.mountAll(request.rootfs, at: rootfs)
        }
        do {
            let pidFile = request.bundle + "/init.pid"
            var process = Process(
                execID: "",
                phase: .created,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
                terminal: request.terminal
            )
            if request.terminal {
                process.console = try await startWithTerminal(
                    stdin: request.stdin,
                    stdout: request.stdout,
                    group: group,
                    keepsOutputOpen: true
                ) { socket in
                    try await runc.create(
                        id: request.id,
                        bundle: request.bundle,
                        pidFile: pidFile,
                        stdio: nil,
                        consoleSocket: socket
                    )
                }
            } else {
                let io = try await ProcessIO.open(
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    group: group,
                    owner: ioOwner
                )
                do {
                    try await runc.create(id: request.id, bundle: request.bundle, pidFile: pidFile, stdio: io.runcStdio)
                } catch {
                    io.close()
                    throw error
                }
                process.io = io
            }
            process.pid = try readPidFile(pidFile)
            let pid = process.pid
            let container = ShimContainer(
                id: request.id,
                bundle: request.bundle,
                namespace: namespace,
                rootfsMounts: mounted,
                runc: runc,
                ioOwner: ioOwner,
                publisher: publisher,
                pids: pids,
                group: group,
                logger: logger,
                initProcess: process,
                scaleDown: scaleDown
            )
            publisher.publish(
                .create(
                    containerID: request.id,
                    bundle: request.bundle,
                    rootfs: request.rootfs,
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    terminal: request.terminal,
                    pid: UInt32(pid)
                ),
                namespace: namespace
            )
            if let early = pids.register(pid, to: container) { await container.processExited(pid: pid, status: early) }
            return container
        } catch {
            Mounts.unmountAll(mounted)
            throw error
        }
    }

    /// Runs a runc command that makes a terminal (`create` or `exec` with `--console-socket`),
    /// receives the pty master runc sends and starts copying between it and the FIFOs.
    /// - Throws: what `runc` throws; ``SystemError`` when no master arrived; ``StdioError``.
    /// - Parameter keepsOutputOpen: for the init, whose terminal outlives a scale-down (see
    ///   ``ProcessTerminal``).
    private static func startWithTerminal(
        stdin: String,
        stdout: String,
        group: any EventLoopGroup,
        keepsOutputOpen: Bool = false,
        _ runc: (String) async throws -> Void
    ) async throws -> ProcessTerminal {
        let socket = try ConsoleSocket()
        defer { socket.remove() }
        try await runc(socket.path)
        let master = try socket.receiveMaster()
        do {
            return try await ProcessTerminal(
                master: master,
                stdin: stdin,
                stdout: stdout,
                group: group,
                keepsOutputOpen: keepsOutputOpen
            )
        } catch {
            master.close()
            throw error
        }
    }

    /// The init process's pid.
    public var pid: pid_t { initProcess.pid }

    /// Whether the init process has exited.
    var initExited: Bool {
        if case .exited = initProcess.phase { return true }
        return false
    }

    // MARK: Start

    /// Starts the init process (`runc start`) or an exec process (`runc exec --detach`).
    /// Publishes TaskStart or TaskExecStarted, then any exit that came meanwhile.
    func start(execID: String) async throws -> pid_t {
        if execID.isEmpty {
            guard initProcess.phase == .created else {
                throw ShimError.failedPrecondition("task \(id) is not in the created state")
            }
            initProcess.phase = .starting
            var restoredIdle = false
            if let migration = scaleDown?.migration, migration.takeWaitingImage() {
                restoredIdle = try await startFromMigratedImage(migration)
            } else {
                do {
                    try await runc.start(id: id, bundle: bundle)
                } catch {
                    if initProcess.phase == .starting { initProcess.phase = .created }
                    throw error
                }
            }
            publisher.publish(.start(containerID: id, pid: UInt32(initProcess.pid)), namespace: namespace)
            guard let driver else {
                finishStart(execID: "")
                return initProcess.pid
            }
            let pid = initProcess.pid
            initProcess.phase = .running
            let pending = initProcess.pendingExit
            initProcess.pendingExit = nil
            await driver.started(pid: pid, alreadyIdle: restoredIdle)
            if let pending { await driver.processExited(pid: pid, status: Int32(bitPattern: pending.code)) }
            return pid
        }
        guard var process = execs[execID] else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        guard process.phase == .defined else {
            throw ShimError.failedPrecondition("exec \(execID) was already started")
        }
        process.phase = .starting
        execs[execID] = process
        let stem = Self.execFileStem(execID)
        let specFile = "\(bundle)/\(stem).json"
        let pidFile = "\(bundle)/\(stem).pid"
        if let driver {
            do {
                try await driver.execNeedsApplication(execID)
            } catch {
                execs[execID]?.phase = .defined
                throw ShimError.failedPrecondition("exec \(execID): \(error)")
            }
        }
        do {
            try Files.write(FilePath(specFile), process.spec, mode: 0o600)
            if process.terminal {
                let (runc, id, bundle) = (runc, id, bundle)
                execs[execID]?.console = try await Self.startWithTerminal(
                    stdin: process.stdin,
                    stdout: process.stdout,
                    group: group
                ) {
                    try await runc.exec(
                        id: id,
                        bundle: bundle,
                        processFile: specFile,
                        pidFile: pidFile,
                        stdio: nil,
                        consoleSocket: $0
                    )
                }
            } else {
                let io = try await ProcessIO.open(
                    stdin: process.stdin,
                    stdout: process.stdout,
                    stderr: process.stderr,
                    group: group,
                    owner: ioOwner
                )
                execs[execID]?.io = io
                try await runc.exec(
                    id: id,
                    bundle: bundle,
                    processFile: specFile,
                    pidFile: pidFile,
                    stdio: io.runcStdio
                )
            }
        } catch {
            execs[execID]?.io?.close()
            execs[execID]?.console?.close()
            execs[execID]?.phase = .defined
            unlink(specFile)
            await driver?.execEnded(execID)
            throw error
        }
        unlink(specFile)
        execs[execID]?.io?.releaseContainerSide()
        let pid = try Self.readPidFile(pidFile)
        unlink(pidFile)
        execs[execID]?.pid = pid
        if let early = pids.register(pid, to: self) { execs[execID]?.pendingExit = early }
        publisher.publish(.execStarted(containerID: id, execID: execID, pid: UInt32(pid)), namespace: namespace)
        finishStart(execID: execID)
        // An exec that exited before its pid was known ended here: it no longer pins the container.
        if let driver, case .exited = execs[execID]?.phase { await driver.execEnded(execID) }
        return pid
    }

    /// Start of a container whose Create found a migrated image (decision 0057): the init that
    /// `runc create` made (waiting on its exec fifo) is ended and the image restored in its place,
    /// with its cgroups, namespaces and stdio. When that fails, the container starts from scratch
    /// (`runc delete`, `runc create`, `runc start`), never half restored; the node is told either way.
    /// - Returns: whether the image was restored (the process was idle on the old node: it scales
    ///   down again as soon as it can, decision 0057); false after a start from scratch.
    /// - Throws: what `runc` throws on the from-scratch path.
    private func startFromMigratedImage(_ migration: ContainerMigration) async throws -> Bool {
        var didRestore = false
        let stale = initProcess.pid
        _ = Glibc.kill(stale, SIGKILL)
        // The reaper delivers its exit as pending (the phase is `starting`); it is no exit of the container.
        let deadline = ContinuousClock.now + .seconds(30)
        while initProcess.pendingExit == nil, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
        initProcess.pendingExit = nil
        let start = ContinuousClock.now
        if migration.takeLiveImage() {
            return try await startFromLiveImage(migration)
        }
        do {
            let restored = try await migration.restoreImages()
            initProcess.pid = restored.pid
            logger.info(
                "migration: restored the migrated image at Start",
                metadata: [
                    "id": "\(id)", "pid": "\(restored.pid)",
                    "ms": "\(milliseconds(ContinuousClock.now - start))",
                    "criu": "\(restored.details["criu"] ?? "-")",
                ]
            )
            await migration.finish(failure: "")
            didRestore = true
        } catch {
            logger.warning("migration: the migrated image cannot be restored, starting from scratch: \(error)")
            migration.removeImages()
            await migration.finish(failure: "restore at the target failed: \(error)")
            try await startFromScratch()
        }
        if let early = pids.register(initProcess.pid, to: self) { initProcess.pendingExit = early }
        return didRestore
    }

    /// Start from a live migration's images (decision 0058): restores lazily (the pages come from
    /// the source through the node's proxy), then waits until every page arrived before telling
    /// the node. When the transfer breaks or the restore fails, the restored process (which may
    /// have run on zero-filled pages) is killed and the container starts from scratch.
    /// - Returns: false (a live container ran on the old node: it is not idle).
    private func startFromLiveImage(_ migration: ContainerMigration) async throws -> Bool {
        let start = ContinuousClock.now
        var failure: String
        do {
            let (restored, pages) = try await migration.restoreLiveThroughNode()
            let restoredAt = SystemClock.realtimeNanoseconds()
            let restoreTime = ContinuousClock.now - start
            initProcess.pid = restored.pid
            // Its exit while the pages move is kept as pending (the phase is `starting`).
            if let early = pids.register(restored.pid, to: self) { initProcess.pendingExit = early }
            let timeout = migration.pagesTransferTimeout
            let broken = try await NIOThreadPool.singleton.runIfActive { pages.waitUntilTransferred(timeout: timeout) }
            if let broken {
                failure = "the live page transfer broke: \(broken)"
                // Every restored process waits on its missing pages (decision 0069): kill them
                // all, then release the daemon's userfaultfds.
                let (containerID, runcRoot) = (id, runc.root)
                _ = try? await NIOThreadPool.singleton.runIfActive {
                    ContainerCgroupProcesses.killAll(id: containerID, runcRoot: runcRoot)
                }
                _ = Glibc.kill(restored.pid, SIGKILL)
                pages.releaseFaultHandlers()
                let deadline = ContinuousClock.now + .seconds(30)
                while initProcess.pendingExit == nil, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(2))
                }
                initProcess.pendingExit = nil
            } else {
                logger.info(
                    "migration: restored the live image; every page arrived",
                    metadata: [
                        "id": "\(id)", "pid": "\(restored.pid)", "restore-ms": "\(milliseconds(restoreTime))",
                        "pages-ms": "\(milliseconds(ContinuousClock.now - start))",
                        "criu": "\(restored.details["criu"] ?? "-")",
                    ]
                )
                migration.removeImages()
                await migration.finish(failure: "", restoredAt: restoredAt)
                return false
            }
        } catch {
            failure = "the live restore at the target failed: \(error)"
        }
        logger.warning(
            "migration: \(failure); starting from scratch",
            metadata: ["criu-logs": "\(migration.liveRestoreLogTails())"]
        )
        migration.removeImages()
        await migration.finish(failure: failure)
        try await startFromScratch()
        if let early = pids.register(initProcess.pid, to: self) { initProcess.pendingExit = early }
        return false
    }

    /// A migrated image that cannot be (or was not fully) restored: runc's waiting init is
    /// replaced by a fresh one, which starts from the bundle (a cold start, never a half-restored
    /// process). On failure the init is back to created, as a failed Start leaves it.
    private func startFromScratch() async throws {
        try? await runc.delete(id: id, bundle: bundle, force: true)
        do {
            _ = try await recreateInit()
            try await runc.start(id: id, bundle: bundle)
        } catch {
            if initProcess.phase == .starting { initProcess.phase = .created }
            throw error
        }
    }

    private func finishStart(execID: String) {
        let pending = execID.isEmpty ? initProcess.pendingExit : execs[execID]?.pendingExit
        if execID.isEmpty { initProcess.phase = .running } else { execs[execID]?.phase = .running }
        if let pending { recordExit(execID: execID, status: pending) }
    }

    // MARK: Exits

    /// Delivers the exit of one of this container's processes (from the reaper).
    func processExited(pid: pid_t, status: ExitStatus) async {
        if let driver {
            if let execID = execs.first(where: { $0.value.pid == pid && $0.key != "" })?.key {
                deliverExit(execID: execID, status: status)
                if case .exited = execs[execID]?.phase { await driver.execEnded(execID) }
            } else if initProcess.phase == .starting && pid == initProcess.pid {
                initProcess.pendingExit = status
            } else {
                // The lifecycle decides: the running init's exit is reported, a dumped or killed one suppressed.
                await driver.processExited(pid: pid, status: Int32(bitPattern: status.code))
            }
            return
        }
        if initProcess.pid == pid {
            deliverExit(execID: "", status: status)
        } else if let execID = execs.first(where: { $0.value.pid == pid })?.key {
            deliverExit(execID: execID, status: status)
        }
    }

    private func deliverExit(execID: String, status: ExitStatus) {
        let phase = execID.isEmpty ? initProcess.phase : execs[execID]?.phase
        switch phase {
        case .starting:
            if execID.isEmpty { initProcess.pendingExit = status } else { execs[execID]?.pendingExit = status }
        case .created, .running, .defined:
            recordExit(execID: execID, status: status)
        case .exited, nil:
            break
        }
    }

    private func recordExit(execID: String, status: ExitStatus) {
        var process = execID.isEmpty ? initProcess : execs[execID]!
        process.phase = .exited(status)
        process.pendingExit = nil
        let waiters = process.waiters
        process.waiters = []
        if execID.isEmpty {
            process.io?.releaseContainerSide()
            process.console?.outputEnds()
            initProcess = process
        } else {
            execs[execID] = process
        }
        publisher.publish(
            .exit(
                containerID: id,
                id: execID.isEmpty ? id : execID,
                pid: UInt32(process.pid),
                exitStatus: status.code,
                exitedAt: ProtobufTimestamp(unixNanoseconds: status.exitedAt)
            ),
            namespace: namespace
        )
        for waiter in waiters { waiter.resume(returning: status) }
    }

    // MARK: Scale-down driver hooks

    /// Reports the init's exit (the driver's `reportExit`), unless it was reported already.
    func recordInitExitFromDriver(status: ExitStatus) {
        if case .exited = initProcess.phase { return }
        recordExit(execID: "", status: status)
    }

    /// The init was restored or cold-started with a new pid.
    func adoptInit(pid: pid_t) {
        initProcess.pid = pid
    }

    /// The container-side descriptors of the init's stdio pipes (restore gives them to CRIU).
    func initContainerSideStdio() -> [SharedDescriptor?] {
        guard let stdio = initProcess.io?.runcStdio else { return [nil, nil, nil] }
        return [stdio.stdin, stdio.stdout, stdio.stderr]
    }

    /// A cold start's `runc create` of the init (after `runc delete`): with the same stdio pipes, or
    /// for a terminal a new pty whose master replaces the old one. Adopts the new pid.
    /// - Returns: the new init's pid.
    /// - Throws: ``RuncError``, ``ShimError``, ``SystemError``.
    func recreateInit() async throws -> pid_t {
        let pidFile = bundle + "/init.pid"
        if let console = initProcess.console {
            let socket = try ConsoleSocket()
            defer { socket.remove() }
            try await runc.create(id: id, bundle: bundle, pidFile: pidFile, stdio: nil, consoleSocket: socket.path)
            try await console.attach(master: try socket.receiveMaster())
        } else {
            let stdio = initProcess.io?.runcStdio ?? RuncStdio(stdin: nil, stdout: nil, stderr: nil)
            try await runc.create(id: id, bundle: bundle, pidFile: pidFile, stdio: stdio)
        }
        let pid = try Self.readPidFile(pidFile)
        initProcess.pid = pid
        return pid
    }

    // MARK: Kill, Delete, Wait, State

    /// Sends `signal` to the init process (through runc, optionally to all processes) or to an exec.
    func kill(execID: String, signal: UInt32, all: Bool) async throws {
        if execID.isEmpty {
            if case .exited = initProcess.phase { throw ShimError.notFound("process already finished: task \(id)") }
            if let driver, initProcess.phase == .running {
                let running = driver.phase == .running
                if await driver.killRequested(signal: Int32(bitPattern: signal)) {
                    // A running init named by `live-migrate` moves to the claimed target first
                    // (decision 0058); when it moved, CRIU ended its processes.
                    if running, let migration = scaleDown?.migration, migration.live,
                        await migration.evacuateLive()
                    {
                        return
                    }
                    try await runc.kill(id: id, bundle: bundle, signal: signal, all: all)
                }
                return
            }
            try await runc.kill(id: id, bundle: bundle, signal: signal, all: all)
            return
        }
        guard let process = execs[execID] else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        switch process.phase {
        case .running, .starting:
            try Processes.kill(process.pid, signal: CInt(signal))
        case .exited, .defined, .created:
            throw ShimError.notFound("process already finished: exec \(execID)")
        }
    }

    /// Deletes an exited exec process, or the container after its init exited (or before it started).
    /// Publishes TaskDelete for the init process.
    func delete(execID: String) async throws -> DeleteResponse {
        if !execID.isEmpty {
            guard let process = execs[execID] else { throw ShimError.notFound("exec \(execID) in task \(id)") }
            switch process.phase {
            case .exited(let status):
                execs[execID] = nil
                await process.console?.waitOutputCopied()
                process.io?.close()
                process.console?.close()
                return DeleteResponse(
                    pid: UInt32(process.pid),
                    exitStatus: status.code,
                    exitedAt: ProtobufTimestamp(unixNanoseconds: status.exitedAt)
                )
            case .defined:
                execs[execID] = nil
                return DeleteResponse(pid: 0, exitStatus: 0, exitedAt: nil)
            case .running, .starting, .created:
                throw ShimError.failedPrecondition("exec \(execID) is still running")
            }
        }
        // Scaled down: stops without a restore (reportExit) and cleans up; stopped: cleans up.
        await driver?.deleteRequested()
        switch initProcess.phase {
        case .running, .starting:
            throw ShimError.failedPrecondition("task \(id) is still running")
        case .created, .defined, .exited:
            break
        }
        try await runc.delete(id: id, bundle: bundle, force: initProcess.phase == .created)
        let status: ExitStatus
        if case .exited(let s) = initProcess.phase {
            status = s
        } else {
            status = ExitStatus(code: 128 + UInt32(SIGKILL), exitedAt: SystemClock.realtimeNanoseconds())
            pids.forget(initProcess.pid)
        }
        // The container's processes are gone: drop the shim's copies of their pipe ends (a task
        // that never started still has them), so the copies see end of file once drained.
        initProcess.io?.releaseContainerSide()
        await initProcess.io?.waitOutputCopied()
        await initProcess.console?.waitOutputCopied()
        initProcess.io?.close()
        initProcess.console?.close()
        for (_, exec) in execs {
            exec.io?.close()
            exec.console?.close()
        }
        Mounts.unmountAll(rootfsMounts)
        unlink(bundle + "/init.pid")
        publisher.publish(
            .delete(
                containerID: id,
                pid: UInt32(initProcess.pid),
                exitStatus: status.code,
                exitedAt: ProtobufTimestamp(unixNanoseconds: status.exitedAt),
                id: id
            ),
            namespace: namespace
        )
        return DeleteResponse(
            pid: UInt32(initProcess.pid),
            exitStatus: status.code,
            exitedAt: ProtobufTimestamp(unixNanoseconds: status.exitedAt)
        )
    }

    /// Waits until the process exits.
    func wait(execID: String) async throws -> ExitStatus {
        let process = execID.isEmpty ? initProcess : execs[execID]
        guard let process else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        if case .exited(let status) = process.phase { return status }
        return await withCheckedContinuation { continuation in
            if execID.isEmpty {
                initProcess.waiters.append(continuation)
            } else {
                execs[execID]?.waiters.append(continuation)
            }
        }
    }

    /// The task's or exec's state for containerd.
    func state(execID: String) throws -> StateResponse {
        let process = execID.isEmpty ? initProcess : execs[execID]
        guard let process else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        var state = StateResponse()
        state.id = execID.isEmpty ? id : execID
        state.bundle = bundle
        state.pid = UInt32(process.pid)
        state.stdin = process.stdin
        state.stdout = process.stdout
        state.stderr = process.stderr
        state.terminal = process.terminal
        state.execID = execID
        switch process.phase {
        case .defined, .created: state.status = .created
        case .starting: state.status = execID.isEmpty ? .created : .created
        case .running: state.status = .running
        case .exited(let status):
            state.status = .stopped
            state.exitStatus = status.code
            state.exitedAt = ProtobufTimestamp(unixNanoseconds: status.exitedAt)
        }
        return state
    }

    // MARK: Exec, IO, Pids, Update

    /// Adds an exec process (started later by ``start(execID:)``). Publishes TaskExecAdded.
    func addExec(_ request: ExecProcessRequest) throws {
        guard execs[request.execID] == nil else {
            throw ShimError.alreadyExists("exec \(request.execID) in task \(id)")
        }
        guard !initExited else { throw ShimError.failedPrecondition("task \(id) has exited") }
        guard let spec = request.spec else {
            throw ShimError.invalidArgument("exec \(request.execID) has no process spec")
        }
        execs[request.execID] = Process(
            execID: request.execID,
            phase: .defined,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            terminal: request.terminal,
            spec: spec.value
        )
        publisher.publish(.execAdded(containerID: id, execID: request.execID), namespace: namespace)
    }

    /// Closes a process's stdin (CloseIO).
    func closeIO(execID: String) throws {
        let process = execID.isEmpty ? initProcess : execs[execID]
        guard let process else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        process.io?.closeStdin()
        process.console?.closeStdin()
    }

    /// Sets the window size of a process's terminal (ResizePty); a process without a terminal is
    /// left alone, as containerd-shim-runc-v2 does.
    func resizePty(execID: String, width: UInt32, height: UInt32) throws {
        let process = execID.isEmpty ? initProcess : execs[execID]
        guard let process else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        guard let console = process.console else { return }
        guard let columns = UInt16(exactly: width), let rows = UInt16(exactly: height) else {
            throw ShimError.invalidArgument(
                "ResizePty \(width)x\(height): a terminal has at most 65535 columns and rows"
            )
        }
        try console.resize(columns: columns, rows: rows)
    }

    /// The highest cumulative CPU time `Stats` reported, kept for the scaled-down answer.
    private var lastCPUNanoseconds: UInt64 = 0

    /// Whether the init process has a terminal.
    var initHasTerminal: Bool { initProcess.terminal }

    /// Makes `master` the init's terminal after a restore (CRIU's `orphan-pts-master`).
    func adoptInitTerminal(_ master: SharedDescriptor) async {
        guard let console = initProcess.console else {
            master.close()
            return
        }
        do {
            try await console.attach(master: master)
        } catch {
            logger.warning("the restored terminal cannot be attached: \(error)", metadata: ["id": "\(id)"])
        }
    }

    /// The container's statistics (`Stats`): its init's cgroups while it runs; while zeropod has
    /// it scaled down (or is moving it between running and scaled down), the small figure of
    /// ``ContainerStatistics/scaledDown(mode:cpuNanoseconds:)`` with the last CPU time reported
    /// (decision 0042).
    /// - Throws: ``ShimError/notFound(_:)`` when the process is gone.
    func statistics(reader: CgroupStatsReader = .system, mode: CgroupHostMode = .current) throws -> ContainerStatistics
    {
        if initExited { throw ShimError.notFound("task \(id) has exited: its cgroup is gone") }
        if let driver, !driver.processRuns { return .scaledDown(mode: mode, cpuNanoseconds: lastCPUNanoseconds) }
        guard let stats = reader.statistics(ofProcess: initProcess.pid, mode: mode) else {
            if driver != nil { return .scaledDown(mode: mode, cpuNanoseconds: lastCPUNanoseconds) }
            throw ShimError.notFound("the cgroup of task \(id) (pid \(initProcess.pid)) does not exist")
        }
        if let cpu = stats.cpuNanoseconds { lastCPUNanoseconds = max(lastCPUNanoseconds, cpu) }
        return stats
    }

    /// The pids in the container (`runc ps`).
    func listPids() async throws -> [UInt32] {
        if initExited { return [] }
        if let driver, !driver.processRuns { return [UInt32(bitPattern: initProcess.pid)] }
        return try await runc.ps(id: id, bundle: bundle).map { UInt32(bitPattern: $0) }
    }

    /// Applies new resource limits (`runc update`); `resources` is OCI LinuxResources JSON.
    func update(resources: [UInt8]) async throws {
        if let driver, !driver.processRuns { return }  // scaled down: accepted (original.md §2)
        let file = bundle + "/update-resources.json"
        try Files.write(FilePath(file), resources, mode: 0o600)
        defer { unlink(file) }
        try await runc.update(id: id, bundle: bundle, resourcesFile: file)
    }

    /// The pid of a process in the container, 0 if not started.
    func pid(execID: String) throws -> pid_t {
        if execID.isEmpty { return initProcess.pid }
        guard let process = execs[execID] else { throw ShimError.notFound("exec \(execID) in task \(id)") }
        return process.pid
    }

    /// The bundle file name (without extension) for an exec's spec and pid files: one per exec id.
    ///
    /// containerd's exec ids are free text, so the name encodes them injectively: ASCII letters,
    /// digits and `-` stay, every other byte (`_` included) becomes `_` and two hex digits. Ids
    /// whose encoding would not fit a file name (255 bytes) use `exec#` and the id's SHA-256.
    static func execFileStem(_ execID: String) -> String {
        var encoded = "exec-"
        for byte in execID.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16)
                encoded += "_" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        // Room for ".json" within NAME_MAX; `#` never appears in an encoded name.
        return encoded.utf8.count <= 240 ? encoded : "exec#" + SHA256.hexDigest(execID)
    }

    private static func readPidFile(_ path: String) throws -> pid_t {
        guard let bytes = try? Files.read(FilePath(path)),
            let pid = pid_t(String(decoding: bytes, as: UTF8.self).trimmedWhitespace), pid > 0
        else {
            throw ShimError.failedPrecondition("pid file \(path) is missing or holds no pid")
        }
        return pid
    }
}
