// `zeropod-manager`: the original's flags (single dash, Go style; `--` works too), the node
// settings file for the run directory, NODE_NAME and POD_IP from the environment.
import ArgumentParser
import Foundation
import Logging
import ZPCore

/// The manager's command line.
public struct ManagerCommand: AsyncParsableCommand {
    /// The command's help.
    public static let configuration = CommandConfiguration(
        commandName: "zeropod-manager",
        abstract:
            "The zeropod-swift node manager: shim status → Prometheus metrics, status labels, events and in-place resize.",
        discussion: """
            Flags are spelled like the original zeropod manager's (-metrics-addr=:8080, -status-labels); \
            --flag works too. Environment: NODE_NAME (the node whose pods are written; required with \
            -status-labels, -status-events or -in-place-scaling), POD_IP (recorded; used by migration), \
            ZEROPOD_NODE_CONFIG (the node settings file, default \(NodeConfig.defaultPath)).
            """
    )

    /// `-metrics-addr`.
    @Option(
        name: [.customLong("metrics-addr", withSingleDash: true), .customLong("metrics-addr")],
        help: ArgumentHelp("Where /metrics is served ([host]:port).", valueName: "address")
    )
    public var metricsAddress = ":8080"

    /// `-node-server-addr`.
    @Option(
        name: [.customLong("node-server-addr", withSingleDash: true), .customLong("node-server-addr")],
        help: ArgumentHelp(
            "Where peer managers reach the node service over mutual TLS (with -migration; its port is the image server's).",
            valueName: "address"
        )
    )
    public var nodeServerAddress = ":8090"

    /// `-migration`.
    @Flag(
        name: [.customLong("migration", withSingleDash: true), .customLong("migration")],
        help:
            "Migrate pods annotated migrate/live-migrate on deletion: the Migration controllers and the node service (needs NODE_NAME and POD_IP)."
    )
    public var migration = false

    /// `-migration-claim-timeout`.
    @Option(
        name: [.customLong("migration-claim-timeout", withSingleDash: true), .customLong("migration-claim-timeout")],
        help: ArgumentHelp(
            "How long a deleted pod's Migration waits for a replacement to claim it (Go duration).",
            valueName: "duration"
        )
    )
    public var migrationClaimTimeout = "10s"

    /// `-migration-ready-timeout`.
    @Option(
        name: [.customLong("migration-ready-timeout", withSingleDash: true), .customLong("migration-ready-timeout")],
        help: ArgumentHelp(
            "How long a claimed Migration waits for the replacement to be ready (Go duration).",
            valueName: "duration"
        )
    )
    public var migrationReadyTimeout = "5m"

    /// `-migration-servers-timeout`.
    @Option(
        name: [
            .customLong("migration-servers-timeout", withSingleDash: true), .customLong("migration-servers-timeout"),
        ],
        help: ArgumentHelp(
            "How long a ready replacement waits for the source's image (Go duration).",
            valueName: "duration"
        )
    )
    public var migrationServersTimeout = "10s"

    /// `-pages-transfer-timeout` (the original's name and default).
    @Option(
        name: [.customLong("pages-transfer-timeout", withSingleDash: true), .customLong("pages-transfer-timeout")],
        help: ArgumentHelp(
            "How long a live migration's page-server proxies stay open for the memory pages (Go duration).",
            valueName: "duration"
        )
    )
    public var pagesTransferTimeout = "5m"

    /// `-auto-gc-migrations`.
    @Option(
        name: [.customLong("auto-gc-migrations", withSingleDash: true), .customLong("auto-gc-migrations")],
        help: ArgumentHelp(
            "Pods own their Migrations, so garbage collection deletes them (Go bool).",
            valueName: "bool"
        )
    )
    public var autoGCMigrations = "true"

    /// `-ca-secret`.
    @Option(
        name: [.customLong("ca-secret", withSingleDash: true), .customLong("ca-secret")],
        help: ArgumentHelp(
            "The Secret (namespace/name) holding the node service's CA; made when missing.",
            valueName: "secret"
        )
    )
    public var caSecret = "zeropod-system/ca-cert"

    /// `-status-labels`.
    @Flag(
        name: [.customLong("status-labels", withSingleDash: true), .customLong("status-labels")],
        help: "Label pods with status.zeropod.ctrox.dev/<container>=RUNNING|SCALED_DOWN."
    )
    public var statusLabels = false

    /// `-status-events`.
    @Flag(
        name: [.customLong("status-events", withSingleDash: true), .customLong("status-events")],
        help: "Create a Kubernetes event for every checkpoint, restore and failure (and dry-run decision)."
    )
    public var statusEvents = false

    /// `-in-place-scaling`.
    @Flag(
        name: [.customLong("in-place-scaling", withSingleDash: true), .customLong("in-place-scaling")],
        help:
            "Lower a scaled-down container's requests to 1m cpu / 1Ki memory and put them back when it runs (pods/resize)."
    )
    public var inPlaceScaling = false

    /// `-kubeconfig`.
    @Option(
        name: [.customLong("kubeconfig", withSingleDash: true), .customLong("kubeconfig")],
        help: ArgumentHelp(
            "A kubeconfig for development (default: $KUBECONFIG, in-cluster, ~/.kube/config).",
            valueName: "path"
        )
    )
    public var kubeconfig: String?

    /// `-node-config`.
    @Option(
        name: [.customLong("node-config", withSingleDash: true), .customLong("node-config")],
        help: ArgumentHelp("The node settings file (its run-dir holds the shims' status sockets).", valueName: "path")
    )
    public var nodeConfig: String?

    /// `-run-dir`.
    @Option(
        name: [.customLong("run-dir", withSingleDash: true), .customLong("run-dir")],
        help: ArgumentHelp("Overrides the node settings' run-dir.", valueName: "dir")
    )
    public var runDirectory: String?

    /// `-debug`.
    @Flag(name: [.customLong("debug", withSingleDash: true), .customLong("debug")], help: "Log at debug level.")
    public var debug = false

    /// No flags given.
    public init() {}

    /// Parses Go-style boolean flags first (`-status-labels=false` drops the flag, `=true` keeps
    /// it), which swift-argument-parser's flags cannot take.
    /// - Throws: `ValidationError` for a boolean value that is not one.
    public static func normalize(_ arguments: [String]) throws -> [String] {
        let booleans = ["status-labels", "status-events", "in-place-scaling", "debug", "migration"]
        var result: [String] = []
        for argument in arguments {
            guard let eq = argument.firstIndex(of: "=") else {
                result.append(argument)
                continue
            }
            let name = argument[..<eq].drop { $0 == "-" }
            guard argument.hasPrefix("-"), booleans.contains(String(name)) else {
                result.append(argument)
                continue
            }
            let value = String(argument[argument.index(after: eq)...])
            guard let on = GoBool.parse(value) else {
                throw ValidationError("\(argument[..<eq]): \"\(value)\" is not a boolean (true, false, 1, 0, t, f)")
            }
            if on { result.append(String(argument[..<eq])) }
        }
        return result
    }

    /// Parses the process's arguments (Go-style booleans included) and runs; exits with the
    /// parser's message and code on bad input (`-help` prints the help).
    public static func runFromCommandLine() async {
        do {
            let arguments = try normalize(Array(CommandLine.arguments.dropFirst()))
            let command = try parse(arguments)
            try await command.run()
        } catch {
            exit(withError: error)
        }
    }

    /// Builds the configuration and runs the manager until SIGTERM or SIGINT.
    public func run() async throws {
        let configuration = try configuration(environment: ProcessInfo.processInfo.environment)
        var logger = Logger(label: "zeropod.manager")
        logger.logLevel = debug ? .debug : .info
        try await Manager(configuration: configuration, logger: logger).run()
    }

    /// The configuration these flags and `environment` give.
    /// - Throws: `ValidationError` naming the flag, variable or file and the reason.
    public func configuration(environment: [String: String]) throws -> ManagerConfiguration {
        let metrics = try ListenAddress(parsing: metricsAddress, flag: "-metrics-addr")
        let node = try ListenAddress(parsing: nodeServerAddress, flag: "-node-server-addr")
        let path =
            nodeConfig ?? environment["ZEROPOD_NODE_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? NodeConfig.defaultPath
        var settings = NodeConfig()
        if let data = FileManager.default.contents(atPath: path) {
            do {
                settings = try NodeConfig(parsing: String(decoding: data, as: UTF8.self), source: path)
            } catch {
                throw ValidationError("node settings \(error)")
            }
        } else if nodeConfig != nil {
            throw ValidationError("-node-config \(path): cannot be read (missing or not readable)")
        }
        if let runDirectory {
            do {
                settings.runDirectory = try NodeConfig(parsing: "run-dir = \(runDirectory)", source: "-run-dir")
                    .runDirectory
            } catch {
                throw ValidationError("-run-dir: \(error)")
            }
        }
        let features = PodFeatures(statusLabels: statusLabels, inPlaceScaling: inPlaceScaling)
        let nodeName = environment["NODE_NAME"] ?? ""
        if (features.any || statusEvents) && nodeName.isEmpty {
            throw ValidationError(
                "NODE_NAME is not set: -status-labels, -status-events and -in-place-scaling write the pods of this node and need its name"
            )
        }
        var migrationSettings: MigrationSettings?
        if migration {
            func duration(_ text: String, _ flag: String) throws -> Duration {
                do {
                    let d = try GoDuration.parse(text)
                    guard d > .zero else { throw ValidationError("\(flag) \"\(text)\": must be positive") }
                    return d
                } catch let error as ValidationError {
                    throw error
                } catch {
                    throw ValidationError("\(flag) \"\(text)\": \(error)")
                }
            }
            guard !nodeName.isEmpty else {
                throw ValidationError("NODE_NAME is not set: -migration needs the node's name")
            }
            guard let podIP = environment["POD_IP"], !podIP.isEmpty else {
                throw ValidationError(
                    "POD_IP is not set: -migration needs the address peers reach this manager at (its certificate names it)"
                )
            }
            guard NodeCertificateAuthority.addressBytes(podIP) != nil else {
                throw ValidationError("POD_IP \"\(podIP)\": not an IPv4 or IPv6 address")
            }
            guard let gc = GoBool.parse(autoGCMigrations) else {
                throw ValidationError(
                    "-auto-gc-migrations: \"\(autoGCMigrations)\" is not a boolean (true, false, 1, 0, t, f)"
                )
            }
            let secretParts = caSecret.split(separator: "/", omittingEmptySubsequences: false)
            guard secretParts.count == 2, !secretParts[0].isEmpty, !secretParts[1].isEmpty else {
                throw ValidationError("-ca-secret \"\(caSecret)\": expected namespace/name")
            }
            var options = MigrationOptions(nodeName: nodeName, podIP: podIP, nodeServerPort: node.port)
            options.claimTimeout = try duration(migrationClaimTimeout, "-migration-claim-timeout")
            options.readyTimeout = try duration(migrationReadyTimeout, "-migration-ready-timeout")
            options.serversTimeout = try duration(migrationServersTimeout, "-migration-servers-timeout")
            options.pagesTransferTimeout = try duration(pagesTransferTimeout, "-pages-transfer-timeout")
            options.autoGC = gc
            migrationSettings = MigrationSettings(
                options: options,
                caSecret: CASecret(namespace: String(secretParts[0]), name: String(secretParts[1]))
            )
        }
        return ManagerConfiguration(
            metricsAddress: metrics,
            nodeServerAddress: node,
            features: features,
            statusEvents: statusEvents,
            kubeconfig: kubeconfig,
            layout: settings.layout,
            nodeName: nodeName,
            podIP: environment["POD_IP"].flatMap { $0.isEmpty ? nil : $0 },
            reportingInstance: ProcessInfo.processInfo.hostName.isEmpty ? nodeName : ProcessInfo.processInfo.hostName,
            migration: migrationSettings
        )
    }
}

/// A `[host]:port` listen address in Go's notation (`:8080` = every interface).
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// The host to bind (`0.0.0.0` for an empty host).
    public var host: String
    /// The port (0: any free port).
    public var port: Int

    /// Parses `host:port`, `:port` or `[v6]:port`.
    /// - Throws: `ValidationError` naming the flag.
    public init(parsing text: String, flag: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ValidationError("\(flag) \"\(text)\": expected [host]:port with a port of 0…65535")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    /// `host:port`.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Everything the manager runs with, from flags, environment and node settings.
public struct ManagerConfiguration: Sendable {
    /// `-metrics-addr`.
    public var metricsAddress: ListenAddress
    /// `-node-server-addr`: the node service's TCP address (with ``migration``).
    public var nodeServerAddress: ListenAddress
    /// `-status-labels`, `-in-place-scaling`.
    public var features: PodFeatures
    /// `-status-events`.
    public var statusEvents: Bool
    /// `-kubeconfig`.
    public var kubeconfig: String?
    /// Where the shims' status sockets are.
    public var layout: NodeLayout
    /// `NODE_NAME`.
    public var nodeName: String
    /// `POD_IP`.
    public var podIP: String?
    /// The events' `reportingInstance` (host name, else node name).
    public var reportingInstance: String
    /// `-migration` and its settings; nil when off.
    public var migration: MigrationSettings?

    /// A configuration from its parts.
    public init(
        metricsAddress: ListenAddress,
        nodeServerAddress: ListenAddress,
        features: PodFeatures,
        statusEvents: Bool,
        kubeconfig: String?,
        layout: NodeLayout,
        nodeName: String,
        podIP: String?,
        reportingInstance: String,
        migration: MigrationSettings? = nil
    ) {
        self.metricsAddress = metricsAddress
        self.nodeServerAddress = nodeServerAddress
        self.features = features
        self.statusEvents = statusEvents
        self.kubeconfig = kubeconfig
        self.layout = layout
        self.nodeName = nodeName
        self.podIP = podIP
        self.reportingInstance = reportingInstance
        self.migration = migration
    }

    /// Whether the manager talks to the API server at all.
    public var needsKubernetes: Bool { features.any || statusEvents || migration != nil }
}

/// `-migration` and the flags that go with it.
public struct MigrationSettings: Sendable {
    /// Node, address, port, timeouts, garbage collection.
    public var options: MigrationOptions
    /// Where the node service's CA is kept.
    public var caSecret: CASecret

    /// Settings.
    public init(options: MigrationOptions, caSecret: CASecret) {
        self.options = options
        self.caSecret = caSecret
    }
}
