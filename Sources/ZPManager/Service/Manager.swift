// The manager's composition: the shim fleet, the metrics server and (when a Kubernetes feature is
// on) the pod writer, as swift-service-lifecycle services in one group that stops on SIGTERM or
// SIGINT.
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals
import ZPKube

/// The running manager: its state and services.
public final class Manager: Sendable {
    /// What it runs with.
    public let configuration: ManagerConfiguration
    /// The node's containers, queues and metrics.
    public let state: NodeState
    /// The shim subscriptions.
    public let fleet: ShimFleet
    /// The metrics endpoint.
    public let metricsServer: MetricsServer
    /// The Kubernetes writer (nil without a pod-writing feature).
    public let writer: PodWriter?
    private let client: KubeClient?
    /// The address peers reach the node service at, once it listens (`-migration`).
    public let nodeServiceAddress = Mutex<SocketAddress?>(nil)
    /// Migration on this node, once the node service runs (`-migration`).
    public let migrationService = Mutex<MigrationService?>(nil)
    private let logger: Logger

    /// Builds the manager (no I/O yet but reading the Kubernetes configuration).
    ///
    /// - Parameters:
    ///   - configuration: Flags, environment and node settings.
    ///   - kube: The Kubernetes configuration to use instead of resolving `-kubeconfig` (tests).
    ///   - fleetOptions: Reconnect settings of the shim subscriptions.
    ///   - writerOptions: Adjusts the writer's options (tests).
    ///   - logger: The root logger.
    /// - Throws: ``KubeConfigError`` when a Kubernetes feature is on and no configuration is usable.
    public init(
        configuration: ManagerConfiguration,
        kube: KubeConfiguration? = nil,
        fleetOptions: ShimFleet.Options = ShimFleet.Options(),
        directoryTick: Duration = .milliseconds(200),
        writerOptions: (inout PodWriter.Options) -> Void = { _ in },
        logger: Logger
    ) throws {
        self.configuration = configuration
        self.logger = logger
        let state = NodeState(eventsEnabled: configuration.statusEvents, logger: logger)
        self.state = state
        self.fleet = ShimFleet(
            state: state,
            directory: ShimDirectory(layout: configuration.layout, tick: directoryTick),
            options: fleetOptions,
            logger: logger
        )
        self.metricsServer = MetricsServer(
            host: configuration.metricsAddress.host,
            port: configuration.metricsAddress.port,
            logger: logger,
            render: { [metrics = state.metrics] in metrics.exposition() }
        )
        if configuration.needsKubernetes {
            let kubeConfiguration = try kube ?? KubeConfiguration.resolve(kubeconfig: configuration.kubeconfig)
            let client = try KubeClient(configuration: kubeConfiguration, logger: logger)
            self.client = client
            guard configuration.features.any || configuration.statusEvents else {
                self.writer = nil
                return
            }
            var options = PodWriter.Options(
                features: configuration.features,
                events: configuration.statusEvents,
                nodeName: configuration.nodeName,
                reporter: EventReporter(instance: configuration.reportingInstance, nodeName: configuration.nodeName)
            )
            writerOptions(&options)
            self.writer = PodWriter(client: client, state: state, options: options, logger: logger)
        } else {
            self.client = nil
            self.writer = nil
        }
    }

    /// Runs until SIGTERM/SIGINT (or until the calling task is cancelled), then shuts down.
    /// - Throws: when a service fails (the metrics address cannot be bound).
    public func run(signals: [UnixSignal] = [.sigterm, .sigint]) async throws {
        logger.info(
            "starting",
            metadata: [
                "statusSockets": "\(configuration.layout.statusSocketDirectory)",
                "metrics": "\(configuration.metricsAddress)",
                "statusLabels": "\(configuration.features.statusLabels)",
                "statusEvents": "\(configuration.statusEvents)",
                "inPlaceScaling": "\(configuration.features.inPlaceScaling)", "node": "\(configuration.nodeName)",
                "podIP": "\(configuration.podIP ?? "")",
            ]
        )
        var services: [any Service] = [
            metricsServer, BackgroundService(name: "shims") { [fleet] in await fleet.run() },
        ]
        if let writer { services.append(BackgroundService(name: "kubernetes") { await writer.run() }) }
        if let settings = configuration.migration, let client {
            let ca = try await settings.caSecret.load(client: client, logger: logger)
            let credentials = try ca.issueLeaf(ipAddress: settings.options.podIP)
            let service = MigrationService(
                options: settings.options,
                layout: configuration.layout,
                client: client,
                state: state,
                tls: try NodeTLS(credentials: credentials),
                group: MultiThreadedEventLoopGroup.singleton,
                logger: logger
            )
            migrationService.withLock { $0 = service }
            services.append(
                ThrowingBackgroundService(name: "migration") { [self] in
                    try await service.run(onListening: { bound in self.nodeServiceAddress.withLock { $0 = bound } })
                }
            )
            logger.info(
                "node service",
                metadata: [
                    "socket": "\(configuration.layout.nodeSocket)", "address": "\(configuration.nodeServerAddress)",
                    "podIP": "\(settings.options.podIP)",
                ]
            )
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
                gracefulShutdownSignals: signals,
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            try? await client?.shutdown()
            throw error
        }
        try? await client?.shutdown()
        logger.info("stopped")
    }
}

/// A long-running loop that may fail as a service: cancelled at graceful shutdown; a failure
/// (the node service's address in use) stops the manager.
struct ThrowingBackgroundService: Service {
    let name: String
    let body: @Sendable () async throws -> Void

    init(name: String, _ body: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.body = body
    }

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await body()
        }
    }
}

/// A long-running loop as a service: cancelled at graceful shutdown.
struct BackgroundService: Service {
    let name: String
    let body: @Sendable () async -> Void

    init(name: String, _ body: @escaping @Sendable () async -> Void) {
        self.name = name
        self.body = body
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await body()
        }
    }
}
