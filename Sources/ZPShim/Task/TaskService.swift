import Logging
import NIOCore
import Synchronization
import SystemPackage
import ZPAPI
import ZPActivator
import ZPBPF
import ZPCheckpoint
import ZPCore
import ZPScaleDown
import ZPSystem
import ZPTTRPC

#if canImport(Glibc)
import Glibc
#endif

/// The containerd task service (`containerd.task.v2.Task` and `containerd.task.v3.Task`, identical
/// bodies): decodes requests, finds the ``ShimContainer`` and maps errors to ttrpc status codes.
public final class TaskService: Sendable {
    /// The ttrpc service names served.
    public static let serviceNames = TaskAPI.serviceNames
    /// The metadata key that carries the containerd namespace.
    public static let namespaceKey = TaskAPI.namespaceMetadataKey
    /// Version reported by Connect and `-v`.
    public static let version = "0.1.0"

    private let defaultNamespace: String
    private let publisher: EventPublisher
    private let group: any EventLoopGroup
    private let logger: Logger
    private let pids = PidIndex()
    /// The containers by id, and the ids whose `Create` is under way (reserved before anything of
    /// the container exists, so a second `Create` with the same id fails at once).
    private let table = Mutex(ContainerTable())
    private let shutdown: AsyncStream<Void>
    private let shutdownContinuation: AsyncStream<Void>.Continuation
    private let runcBinary: String?
    private let statusBoard: ShimStatusBoard?
    private let node: NodeConfig
    /// Why the node settings file was refused at start: every `Create` fails with it.
    private let nodeSettingsProblem: String?
    private let pods = PodNetworks()
    /// The one CRIU checkpointer of this shim (the node's CRIU), shared by every container's driver.
    private let checkpointer: ContainerCheckpointer
    /// This shim's status socket and the node's wake group registry; nil without a status socket.
    private let wakeGroups: (statusSocket: String, registry: WakeGroupRegistry)?
    private let jobs: AsyncStream<@Sendable () async -> Void>
    private let jobInput: AsyncStream<@Sendable () async -> Void>.Continuation

    /// - Parameters:
    ///   - namespace: The namespace used when a request carries none (the `-namespace` flag).
    ///   - publisher: Where task events go.
    ///   - group: Event loops for stdio copies.
    ///   - runcBinary: The runc to use (tests); nil takes `BinaryName` of containerd's runc options, else the node setting `runc-path`.
    ///   - logger: Request failures are logged here.
    /// - Parameter statusBoard: where the scale-down drivers publish phase changes (the status service's view).
    /// - Parameter statusSocket: this shim's status socket, which serves `Wake`; containers join
    ///   their wake group (`zeropod-swift/wake-group`) only when it is set.
    /// - Parameter node: the node settings; nil reads them (``NodeSettings/load(path:)``). When
    ///   they carry a ``NodeSettings/problem``, every `Create` fails with it (decision 0032).
    public init(
        namespace: String,
        publisher: EventPublisher,
        group: any EventLoopGroup,
        runcBinary: String? = nil,
        statusBoard: ShimStatusBoard? = nil,
        statusSocket: String? = nil,
        node: NodeSettings? = nil,
        logger: Logger
    ) {
        defaultNamespace = namespace
        self.statusBoard = statusBoard
        self.publisher = publisher
        self.group = group
        self.logger = logger
        self.runcBinary = runcBinary
        (shutdown, shutdownContinuation) = AsyncStream.makeStream(of: Void.self)
        (jobs, jobInput) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
        let settings = node ?? NodeSettings.load()
        if let problem = settings.problem {
            logger.error("node settings refused; every Create fails until the file is fixed: \(problem)")
        }
        self.node = settings.config
        self.nodeSettingsProblem = settings.problem
        checkpointer = ContainerCheckpointer(
            checkpointer: Checkpointer(
                criuPath: FilePath(settings.config.criuPath),
                leavesZeroPagesOut: settings.config.skipZeroPages,
                tracksWrites: true
            )
        )
        wakeGroups = statusSocket.map { ($0, WakeGroupRegistry(layout: settings.config.layout)) }
    }

    /// Runs the containers' scale-down drivers (each until its container is deleted) until cancelled.
    public func runBackgroundJobs() async {
        await withDiscardingTaskGroup { group in
            for await job in jobs { group.addTask { await job() } }
        }
    }

    /// The number of containers this shim holds.
    public var containerCount: Int { table.withLock { $0.containers.count } }

    /// Delivers process exits from the reaper to their containers until the stream ends.
    public func deliverExits(_ exits: AsyncStream<(pid: pid_t, status: ExitStatus)>) async {
        for await exit in exits {
            if let container = pids.claimExit(of: exit.pid, status: exit.status) {
                await container.processExited(pid: exit.pid, status: exit.status)
            }
        }
    }

    /// Returns once containerd asked for shutdown and no container is left.
    public func waitForShutdown() async {
        for await _ in shutdown { return }
    }

    /// The router with every task method registered under both service names.
    public func router() -> TTRPCRouter {
        var router = TTRPCRouter()
        let methods: [(TaskAPI.Method, @Sendable (TTRPCCall) async throws -> [UInt8])] = [
            (.create, { [self] in try await create($0) }),
            (.start, { [self] in try await start($0) }),
            (.state, { [self] in try await state($0) }),
            (.kill, { [self] in try await kill($0) }),
            (.delete, { [self] in try await delete($0) }),
            (.wait, { [self] in try await wait($0) }),
            (.exec, { [self] in try await exec($0) }),
            (.pids, { [self] in try await pids($0) }),
            (.stats, { [self] in try await stats($0) }),
            (.update, { [self] in try await update($0) }),
            (.closeIO, { [self] in try await closeIO($0) }),
            (.connect, { [self] in try await connect($0) }),
            (.shutdown, { [self] in try await shutdown($0) }),
            (.resizePty, { [self] in try await resizePty($0) }),
            (.pause, { _ in throw ShimError.notImplemented("Pause") }),
            (.resume, { _ in throw ShimError.notImplemented("Resume") }),
            (.checkpoint, { _ in throw ShimError.notImplemented("Checkpoint") }),
        ]
        let logger = logger
        for service in Self.serviceNames {
            for (method, handler) in methods {
                router.register(service: service, method: method.rawValue) { call in
                    do {
                        return try await handler(call)
                    } catch {
                        let status = ShimError.status(for: error)
                        logger.log(
                            level: status.code == .notFound ? .debug : .warning,
                            "\(method.rawValue) failed",
                            metadata: ["error": "\(status.message)"]
                        )
                        throw status
                    }
                }
            }
        }
        return router
    }

    // MARK: methods

    private func namespace(of call: TTRPCCall) -> String {
        call.metadataValue(Self.namespaceKey) ?? defaultNamespace
    }

    private func container(_ id: String) throws -> ShimContainer {
        guard let container = table.withLock({ $0.containers[id] }) else { throw ShimError.notFound("task \(id)") }
        return container
    }

    private func create(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try CreateTaskRequest(decoding: call.payload)
        guard !request.id.isEmpty else { throw ShimError.invalidArgument("Create without a task id") }
        if let problem = nodeSettingsProblem {
            throw ShimError.failedPrecondition(
                "node settings refused (fix the file; the next shim reads it again): \(problem)"
            )
        }
        guard table.withLock({ $0.reserve(request.id) }) else { throw ShimError.alreadyExists("task \(request.id)") }
        // Where Create's time goes (issue 17, shim start): logged with "created task".
        let createStart = ContinuousClock.now
        var timings = (scaleDownSetup: Duration.zero, runcStart: ContinuousClock.now)
        let namespace = namespace(of: call)
        let container: ShimContainer
        let scaleDown: ScaleDownWiring?
        do {
            // containerd's runc options (decision 0042): BinaryName wins over the node setting
            // `runc-path`, which wins over `runc` on PATH.
            let options: RuncOptions
            let runc: RuncDriver
            do {
                options = try RuncOptions(any: request.options)
                try options.checkSupported()
                runc = try RuncDriver(
                    namespace: namespace,
                    options: options,
                    binary: runcBinary,
                    nodeDefault: node.runcPath
                )
            } catch {
                throw ShimError.invalidArgument("task \(request.id): \(error)")
            }
            do {
                try RuncOptionsFile.write(options, bundle: request.bundle)
            } catch {
                throw ShimError.failedPrecondition(
                    "task \(request.id): cannot keep its runc options in the bundle: \(error)"
                )
            }
            let ioOwner = options.ioUID != 0 || options.ioGID != 0 ? (uid: options.ioUID, gid: options.ioGID) : nil
            let scaleDownStart = ContinuousClock.now
            scaleDown = try await makeScaleDown(request, runc: runc, options: options, namespace: namespace)
            timings.scaleDownSetup = scaleDownStart.duration(to: .now)
            // The replaced container's image, if a claimed Migration brings one (decision 0057):
            // before the rootfs is mounted, so its changed files land in the fresh upper dir.
            if let migration = scaleDown?.migration { await migration.fetchImage() }
            timings.runcStart = .now
            do {
                container = try await ShimContainer.create(
                    request,
                    namespace: namespace,
                    runc: runc,
                    ioOwner: ioOwner,
                    publisher: publisher,
                    pids: pids,
                    group: group,
                    logger: logger,
                    scaleDown: scaleDown
                )
            } catch {
                if let scaleDown { await pods.release(netnsPath: scaleDown.netnsPath, container: request.id) }
                throw error
            }
        } catch {
            table.withLock { $0.release(request.id) }
            throw error
        }
        table.withLock { $0.insert(container, id: request.id) }
        if let scaleDown {
            scaleDown.container.attach(container)
            jobInput.yield { await scaleDown.driver.run() }
        }
        let pid = await container.pid
        let total = createStart.duration(to: .now)
        let containerPart = timings.runcStart.duration(to: .now)
        logger.info(
            "created task",
            metadata: [
                "id": "\(request.id)", "pid": "\(pid)",
                "ms":
                    "total \(milliseconds(total)), scale-down wiring \(milliseconds(timings.scaleDownSetup)) (the pod's redirector is set up off Create, decision 0060: see \"redirector ready\"), container \(milliseconds(containerPart)) (mounts, runc create)",
            ]
        )
        return PidResponse(pid: UInt32(pid)).encoded()
    }

    /// The scale-down driver for a new container and its adapters (decision 0018), or nil when
    /// zeropod does not scale it down (not named in `container-names`, the sandbox,
    /// `scaledown-duration` 0, no pod netns path).
    /// - Throws: ``ShimError/invalidArgument(_:)`` with the ConfigError text for a malformed annotation.
    private func makeScaleDown(
        _ request: CreateTaskRequest,
        runc: RuncDriver,
        options: RuncOptions,
        namespace: String
    ) async throws -> ScaleDownWiring? {
        let bundle = BundleConfig(bundle: request.bundle)
        let config: ContainerConfig
        do {
            config = try ContainerConfig(annotations: bundle.annotations)
        } catch {
            throw ShimError.invalidArgument("\(error)")
        }
        // Both migrations are wired through the scale-down (decisions 0057, 0058): offline moves a
        // scaled-down container's checkpoint, live a running container's lazy dump.
        if config.isManaged, config.liveMigrationEnabled, !config.scaleDownEnabled {
            throw ShimError.notImplemented(
                "\(ZeropodAnnotation.liveMigrate.rawValue) names container \"\(config.containerName)\", whose scale-down is off: live migration of such a container is not supported yet"
            )
        }
        // Live migration needs userfaultfd on both nodes (CRIU's lazy pages): refused where CRIU
        // says it is missing, rather than silently not migrated (decision 0058). Before anything
        // of the pod is taken.
        if config.isManaged, config.liveMigrationEnabled, config.scaleDownEnabled {
            let criuPath = options.criuPath.isEmpty ? checkpointer.checkpointer.criuPath : FilePath(options.criuPath)
            if !RestorePreparation.userfaultfdUsable(criuPath: criuPath.string) {
                throw ShimError.notImplemented(
                    "\(ZeropodAnnotation.liveMigrate.rawValue): CRIU \(criuPath) reports no lazy-pages (userfaultfd) support on this node, which live migration needs; use \(ZeropodAnnotation.migrate.rawValue) (offline) or remove it"
                )
            }
        }
        if config.isManaged, config.migrationEnabled, !config.scaleDownEnabled {
            throw ShimError.invalidArgument(
                "\(ZeropodAnnotation.migrate.rawValue) names container \"\(config.containerName)\", whose scale-down is off: only a scaled-down container's checkpoint migrates"
            )
        }
        guard config.isManaged, config.scaleDownEnabled else { return nil }
        let probesKnown = !node.probeSourceAddresses.isEmpty || node.learnProbeSources
        if let problem = config.speaksFirstPortsProblem(probesRecognisedWithoutContent: probesKnown) {
            throw ShimError.invalidArgument("\(problem)")
        }
        guard let netns = bundle.networkNamespacePath else {
            logger.warning(
                "scale-down off: the spec names no network namespace path",
                metadata: ["id": "\(request.id)"]
            )
            return nil
        }
        // The pod's redirector is set up off the Create path (decision 0060): as a background job
        // when the first driver of the pod arms its activator, which waits for it; Delete waits
        // for a setup under way before it releases the pod.
        let pod = pods.join(netnsPath: netns, container: request.id) { [pods, node, logger, jobInput] setup in
            jobInput.yield {
                switch await pods.setUp(setup, netnsPath: netns, node: node) {
                case .success(let timings):
                    logger.info("redirector ready", metadata: ["netns": "\(netns)", "ms": "\(timings)"])
                case .failure(let error):
                    logger.warning("scale-down off: redirector for \(netns) failed: \(error)")
                }
            }
        }
        let wakeGroup = wakeGroups.flatMap { socket, registry in
            WakeGroupMember(
                config: config,
                containerID: request.id,
                containerdNamespace: namespace,
                statusSocket: socket,
                registry: registry,
                group: group,
                logger: logger
            )
        }
        var containerLogger = logger
        containerLogger[metadataKey: "container"] = "\(request.id)"
        // kubelet's probes are recognised by their connection when the node sets probe sources or
        // learns kubelet's connections (sk_lookup leaves those to the activator, decision 0052).
        let handover = config.listenerHandoverApplies(
            probesRecognisedWithoutContent: !node.probeSourceAddresses.isEmpty || node.learnProbeSources
        )
        if config.listenerHandover && !handover {
            containerLogger.info(
                "listener handover off: the node sets neither probe-source-addresses nor learn-probe-sources and probe detection is on, so the activator keeps the ports (decision 0046)"
            )
        }
        let redirect = DeferredPodRedirect(location: netns, setup: pod.setup) {
            [group, containerLogger] redirector in
            let connections = ContainerConnections(
                redirector: redirector,
                namespacePath: FilePath(netns),
                owner: pod.owner,
                settings: .init(keepConnections: config.keepConnections, listenerHandover: handover),
                logger: containerLogger
            )
            let podRedirect = PodRedirect(
                redirector: redirector,
                namespacePath: FilePath(netns),
                configuration: ActivatorConfiguration(container: config, probesRecognisedWithoutContent: probesKnown),
                group: group,
                logger: containerLogger,
                connections: connections
            )
            return DeferredPodRedirect.Parts(redirect: podRedirect, connections: connections)
        }
        let handle = ContainerHandle()
        let control = RuncContainerControl(
            id: request.id,
            bundle: request.bundle,
            runc: runc,
            pids: pids,
            container: handle,
            redirect: redirect
        )
        // The CriuPath runc option (containerd 1.x) picks this container's CRIU.
        let criu =
            options.criuPath.isEmpty
            ? checkpointer
            : ContainerCheckpointer(
                checkpointer: Checkpointer(
                    criuPath: FilePath(options.criuPath),
                    leavesZeroPagesOut: node.skipZeroPages,
                    tracksWrites: true
                )
            )
        var checkpoints = CRIUCheckpoints(
            checkpointer: criu,
            target: RuncContainer(id: request.id, runcRoot: FilePath(runc.root)),
            imagesDirectory: node.layout.imageDirectory(containerdNamespace: namespace, containerID: request.id),
            namespaceImagesDirectory: node.layout.imageDirectory(containerdNamespace: namespace),
            lazyRestore: node.lazyRestore,
            logLevel: Int32(node.criuLogLevel),
            pids: pids,
            container: handle,
            redirect: redirect
        )
        checkpoints.terminal = request.terminal
        let settings = ScaleDownDriver.Settings(
            lifecycle: ContainerLifecycle.Configuration(
                scaleDownDuration: config.scaleDownDuration ?? .zero,
                checkpointingEnabled: !config.disableCheckpointing,
                openConnectionsCountAsActivity: node.openConnectionsAreActivity,
                preDump: config.preDump,
                wakesGroup: wakeGroup != nil,
                dryRun: config.dryRun
            ),
            ports: config.ports
        )
        let driver = ScaleDownDriver(
            id: request.id,
            settings: settings,
            control: control,
            checkpoints: checkpoints,
            redirect: redirect,
            status: statusBoard.map { StatusBoardSink(board: $0, id: request.id) },
            wakeGroup: wakeGroup,
            logger: logger
        )
        let migration = config.anyMigrationEnabled
            ? ContainerMigration(
                layout: node.layout,
                containerID: request.id,
                pod: NodeAPI.PodInfo(
                    name: config.podName,
                    namespace: config.podNamespace,
                    containerName: config.containerName
                ),
                imagesDirectory: checkpoints.imagesDirectory,
                upperDirectory: config.disableMigrateData ? nil : ContainerMigration.upperDirectory(of: request.rootfs),
                group: group,
                logger: containerLogger,
                restoreImages: { [checkpoints] in try await checkpoints.restoreMigrated() },
                removeImages: { [checkpoints] in checkpoints.removeImages() },
                live: config.liveMigrationEnabled,
                pagesTransferTimeout: node.pagesTransferTimeout,
                dumpLive: { [checkpoints] port, configFile, timeout, ready in
                    try await checkpoints.checkpointLive(
                        pageServerPort: port,
                        configFile: configFile,
                        timeout: timeout,
                        ready: ready
                    )
                },
                restoreLive: { [checkpoints] port in try await checkpoints.restoreMigratedLive(proxyPort: port) }
            ) : nil
        return ScaleDownWiring(
            driver: driver,
            container: handle,
            netnsPath: netns,
            redirect: redirect,
            migration: migration
        )
    }

    /// Carries out a `Wake` call of the status service (wake groups): wakes container `request.id`
    /// as if a connection came, unless it runs, is coming back or stopped.
    /// - Throws: ``TTRPCStatusError``: `notFound` for an id this shim does not serve,
    ///   `failedPrecondition` when the container cannot come back.
    public func wake(_ request: StatusAPI.WakeRequest) async throws -> StatusAPI.WakeResponse {
        do {
            let container = try container(request.id)
            guard let driver = container.driver else {
                return StatusAPI.WakeResponse(outcome: .notScaledDown, lifecyclePhase: nil)
            }
            logger.info("woken by wake group", metadata: ["id": "\(request.id)", "origin": "\(request.origin)"])
            do {
                return try await driver.wakeRequestedByGroup()
            } catch {
                throw ShimError.failedPrecondition("Wake: \(error)")
            }
        } catch {
            throw ShimError.status(for: error)
        }
    }

    private func start(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskProcessRequest(decoding: call.payload)
        let pid = try await container(request.id).start(execID: request.execID)
        return PidResponse(pid: UInt32(pid)).encoded()
    }

    private func state(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskProcessRequest(decoding: call.payload)
        return try await container(request.id).state(execID: request.execID).encoded()
    }

    private func kill(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try KillRequest(decoding: call.payload)
        let container = try container(request.id)
        // The Kill of a scaled-down init whose pod is deleted: its checkpoint goes to the claimed
        // target first (decision 0057); the node answers at once when no Migration applies.
        if request.execID.isEmpty, let migration = container.scaleDown?.migration,
            let driver = container.driver, driver.phase == .scaledDown
        {
            await migration.evacuate()
        }
        try await container.kill(execID: request.execID, signal: request.signal, all: request.all)
        return EmptyMessage().encoded()
    }

    private func delete(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskProcessRequest(decoding: call.payload)
        let container = try container(request.id)
        let response = try await container.delete(execID: request.execID)
        if request.execID.isEmpty {
            table.withLock { _ = $0.containers.removeValue(forKey: request.id) }
            if let scaleDown = container.scaleDown {
                await scaleDown.driver.stop()
                // The pod's redirector setup may still run (decision 0060): wait for it first.
                _ = await scaleDown.redirect.partsIfStarted()
                scaleDown.connections?.containerGone()
                scaleDown.container.detach()
                await pods.release(netnsPath: scaleDown.netnsPath, container: request.id)
            }
            logger.info("deleted task", metadata: ["id": "\(request.id)"])
        }
        return response.encoded()
    }

    private func wait(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskProcessRequest(decoding: call.payload)
        let status = try await container(request.id).wait(execID: request.execID)
        return WaitResponse(exitStatus: status.code, exitedAt: ProtobufTimestamp(unixNanoseconds: status.exitedAt))
            .encoded()
    }

    private func exec(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try ExecProcessRequest(decoding: call.payload)
        try await container(request.id).addExec(request)
        return EmptyMessage().encoded()
    }

    private func pids(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskIDRequest(decoding: call.payload)
        return PidsResponse(pids: try await container(request.id).listPids()).encoded()
    }

    private func stats(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskIDRequest(decoding: call.payload)
        let statistics = try await container(request.id).statistics()
        return StatsResponse(stats: statistics.any).encoded()
    }

    private func resizePty(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try ResizePtyRequest(decoding: call.payload)
        try await container(request.id).resizePty(execID: request.execID, width: request.width, height: request.height)
        return EmptyMessage().encoded()
    }

    private func update(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try UpdateTaskRequest(decoding: call.payload)
        guard let resources = request.resources else {
            throw ShimError.invalidArgument("Update of task \(request.id) without resources")
        }
        try await container(request.id).update(resources: resources.value)
        return EmptyMessage().encoded()
    }

    private func closeIO(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try CloseIORequest(decoding: call.payload)
        if request.stdin { try await container(request.id).closeIO(execID: request.execID) }
        return EmptyMessage().encoded()
    }

    private func connect(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskIDRequest(decoding: call.payload)
        let taskPID = try await container(request.id).pid
        return ConnectResponse(shimPID: UInt32(getpid()), taskPID: UInt32(taskPID), version: Self.version).encoded()
    }

    private func shutdown(_ call: TTRPCCall) async throws -> [UInt8] {
        let request = try TaskIDRequest(decoding: call.payload)
        if containerCount == 0 || request.now {
            logger.info("shutdown requested")
            shutdownContinuation.yield()
        }
        return EmptyMessage().encoded()
    }
}

/// The task service's containers by id, and the ids whose `Create` runs (guarded by one lock).
private struct ContainerTable {
    var containers: [String: ShimContainer] = [:]
    private var creating: Set<String> = []

    /// Claims `id` for a `Create`; false when a container or another `Create` has it.
    mutating func reserve(_ id: String) -> Bool {
        guard containers[id] == nil else { return false }
        return creating.insert(id).inserted
    }

    /// Gives up a claim after a failed `Create`.
    mutating func release(_ id: String) {
        creating.remove(id)
    }

    /// Ends a claim with the created container.
    mutating func insert(_ container: ShimContainer, id: String) {
        creating.remove(id)
        containers[id] = container
    }
}
