// The per-container configuration, parsed from the `zeropod.ctrox.dev/*` annotations that
// containerd copies from the pod into each container's OCI spec. Same keys, defaults and syntax as
// the original zeropod (docs/configuration.md), with stricter checks where the original silently
// accepted values that can never work; each difference is listed in docs/configuration.md.

/// The annotation keys zeropod reads, under `zeropod.ctrox.dev/`.
public enum ZeropodAnnotation: String, CaseIterable, Sendable {
    /// Idle time before scale-down (Go duration, default `1m`, `0` disables).
    case scaledownDuration = "zeropod.ctrox.dev/scaledown-duration"
    /// Comma list of container names to manage (default: every app container).
    case containerNames = "zeropod.ctrox.dev/container-names"
    /// Ports per container: `name=80,8080;other=9000` (default: detected listening ports).
    case portsMap = "zeropod.ctrox.dev/ports-map"
    /// Scale down by killing instead of checkpointing (Go bool, default false).
    case disableCheckpointing = "zeropod.ctrox.dev/disable-checkpointing"
    /// Pre-dump memory before the final checkpoint (Go bool, default false).
    case preDump = "zeropod.ctrox.dev/pre-dump"
    /// Do not answer kubelet probes in the activator (Go bool, default false).
    case disableProbeDetection = "zeropod.ctrox.dev/disable-probe-detection"
    /// Bytes read ahead to recognise a probe (integer, default 1024).
    case probeBufferSize = "zeropod.ctrox.dev/probe-buffer-size"
    /// How long the activator retries connecting to the restored app (Go duration, default 5s).
    case connectTimeout = "zeropod.ctrox.dev/connect-timeout"
    /// Lifetime limit of a proxied first connection (Go duration, default 5s).
    case proxyTimeout = "zeropod.ctrox.dev/proxy-timeout"
    /// Comma list of containers migrated on pod deletion (needs checkpointing).
    case migrate = "zeropod.ctrox.dev/migrate"
    /// The one container migrated live (lazy pages).
    case liveMigrate = "zeropod.ctrox.dev/live-migrate"
    /// Migrate without the container's file system changes (Go bool, default false).
    case disableMigrateData = "zeropod.ctrox.dev/disable-migrate-data"
    /// Only report scale-downs and restores, never carry them out (Go bool, default false; the
    /// original's newer versions, PR #197).
    case dryRun = "zeropod.ctrox.dev/dry-run"

    /// The common prefix of every zeropod annotation.
    public static let prefix = "zeropod.ctrox.dev/"
}

/// zeropod-swift's own annotation keys, for settings the original zeropod does not have. They live
/// under ``prefix`` (`zeropod-swift/`), never under `zeropod.ctrox.dev/`, which belongs to the original
/// (docs/decisions/0011-wake-groups.md).
public enum ZeropodSwiftAnnotation: String, CaseIterable, Sendable {
    /// The wake group of the container: a DNS label; every scaled-down member of the group on the
    /// node starts its restore when one member is woken by a connection or an exec (default: none).
    case wakeGroup = "zeropod-swift/wake-group"
    /// Keep the container's established TCP connections across a scale-down (CRIU
    /// `tcp_established`, their peers' segments held by the pod's eBPF; Go bool, default true;
    /// docs/decisions/0045-connections-across-scale-down.md). `false` closes them as the original does.
    case keepConnections = "zeropod-swift/keep-connections"
    /// Queue new connections of a scaled-down container in the kernel, on listeners the restored
    /// application's own listeners take over, instead of proxying them (Go bool, default true;
    /// docs/decisions/0046-listener-handover.md). `false` keeps the activator's proxy.
    case listenerHandover = "zeropod-swift/listener-handover"
    /// Ports whose server speaks first (MySQL/MariaDB, SMTP, FTP, ...): comma list of ports, default
    /// none. Where the activator keeps a port (the proxy path), a connection to one of them that is
    /// not a probe's restores at once, without the silent window (docs/decisions/0055-speak-first-ports.md).
    case speaksFirstPorts = "zeropod-swift/speaks-first-ports"

    /// The common prefix of zeropod-swift's own annotations.
    public static let prefix = "zeropod-swift/"
}

/// Annotations the CRI plugin of containerd sets on every container's OCI spec.
public enum CRIAnnotation {
    /// The container's name in the pod spec.
    public static let containerName = "io.kubernetes.cri.container-name"
    /// `sandbox` for the pause container, `container` for app containers.
    public static let containerType = "io.kubernetes.cri.container-type"
    /// The pod's name.
    public static let sandboxName = "io.kubernetes.cri.sandbox-name"
    /// The pod's namespace.
    public static let sandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
    /// The pod's UID.
    public static let sandboxUID = "io.kubernetes.cri.sandbox-uid"
}

/// The kind of container, from `io.kubernetes.cri.container-type`.
public enum ContainerType: Equatable, Sendable {
    /// The pod sandbox (pause container): never managed by zeropod.
    case sandbox
    /// An app container of a pod.
    case container
    /// No CRI annotation, e.g. a container started with `ctr run`.
    case unspecified
    /// A value this version does not know; treated like an app container.
    case other(String)

    /// Maps the annotation value (nil when absent).
    public init(annotation: String?) {
        switch annotation {
        case nil, "": self = .unspecified
        case "sandbox": self = .sandbox
        case "container": self = .container
        case let value?: self = .other(value)
        }
    }
}

/// The zeropod configuration of one container, parsed from its OCI spec annotations.
///
/// An absent or empty annotation means the default, as in the original. Values are not trimmed.
public struct ContainerConfig: Equatable, Sendable {
    /// Default idle time before scale-down: one minute.
    public static let defaultScaleDownDuration: Duration = .seconds(60)
    /// Default activator read-ahead for probe detection, in bytes.
    public static let defaultProbeBufferSize = 1024
    /// Largest accepted `probe-buffer-size` (1 MiB); the original did not check.
    public static let maximumProbeBufferSize = 1 << 20
    /// Default `connect-timeout`.
    public static let defaultConnectTimeout: Duration = .seconds(5)
    /// Annotation keys under `zeropod.ctrox.dev/` written by the zeropod manager for its own use
    /// (in-place scaling); they are not container settings and are neither parsed nor reported.
    public static let managerAnnotationKeys: Set<String> = [
        "zeropod.ctrox.dev/cpu-requests", "zeropod.ctrox.dev/memory-requests",
    ]

    /// `io.kubernetes.cri.container-name`; empty when absent.
    public var containerName: String
    /// `io.kubernetes.cri.container-type`.
    public var containerType: ContainerType
    /// `io.kubernetes.cri.sandbox-name`; empty when absent.
    public var podName: String
    /// `io.kubernetes.cri.sandbox-namespace`; empty when absent.
    public var podNamespace: String
    /// `io.kubernetes.cri.sandbox-uid`; empty when absent.
    public var podUID: String

    /// Idle time before scale-down; nil when scale-down is disabled (`scaledown-duration: 0`).
    public var scaleDownDuration: Duration?
    /// `container-names`; empty means every app container of the pod.
    public var containerNames: [String]
    /// The ports of this container from `ports-map`, in order; empty means "detect listening ports".
    public var ports: [UInt16]
    /// `disable-checkpointing`: scale down by killing; restore is a cold start.
    public var disableCheckpointing: Bool
    /// `pre-dump`: pre-dump memory before the final checkpoint (the checkpointer skips it where the
    /// kernel has no dirty-page tracking).
    public var preDump: Bool
    /// `disable-probe-detection`: the activator treats probes like any other connection.
    public var disableProbeDetection: Bool
    /// `probe-buffer-size`: bytes read ahead to recognise a probe.
    public var probeBufferSize: Int
    /// `connect-timeout`: how long the activator retries connecting to the restored app.
    public var connectTimeout: Duration
    /// `proxy-timeout`: idle limit of a connection proxied by the activator (closed once no byte
    /// moved either way for this long); nil (absent, empty or `0`) = no limit. The original applied
    /// its 5 s default as a total lifetime, which cut long first connections.
    public var proxyTimeout: Duration?
    /// `migrate`: containers migrated when the pod is deleted.
    public var migrate: [String]
    /// `live-migrate`: the one container migrated live; nil when absent.
    public var liveMigrate: String?
    /// `disable-migrate-data`: migrate without the container's file system changes.
    public var disableMigrateData: Bool
    /// `dry-run`: the idle timer and the activity tracking run, but the container is never
    /// checkpointed, killed, pre-dumped or redirected; "would scale down" and "would restore" are
    /// reported instead (decision 0031).
    public var dryRun: Bool
    /// `zeropod-swift/wake-group`: the group of containers that wake together; nil when absent.
    public var wakeGroup: String?
    /// `zeropod-swift/keep-connections`: established connections survive a scale-down.
    public var keepConnections: Bool
    /// `zeropod-swift/listener-handover`: new connections queue for the restored listener (no proxy).
    public var listenerHandover: Bool
    /// `zeropod-swift/speaks-first-ports`: the ports (of the pod's containers) whose server speaks
    /// first; empty when absent. A pod's containers share one network namespace, so a port names
    /// one container's listener; each container applies the ports it serves.
    public var speaksFirstPorts: Set<UInt16>

    /// Why `speaks-first-ports` cannot take effect on a node where probes are
    /// `probesRecognisedWithoutContent` or not, or nil. Restoring at the connection means not looking
    /// at its content, so probes must be known by their connection (the node's
    /// `probe-source-addresses`, or kubelet's own connections, `learn-probe-sources`); otherwise a
    /// kubelet TCP probe would restore the container. With `disable-probe-detection` every
    /// connection restores at once anyway, and the setting is accepted.
    /// - Returns: the refusal, naming the annotation and the node settings to change.
    public func speaksFirstPortsProblem(probesRecognisedWithoutContent: Bool) -> ConfigError? {
        guard !speaksFirstPorts.isEmpty, !probesRecognisedWithoutContent, !disableProbeDetection else { return nil }
        return ConfigError(
            key: ZeropodSwiftAnnotation.speaksFirstPorts.rawValue,
            value: speaksFirstPorts.sorted().map(String.init).joined(separator: ","),
            reason: .notSupportedYet(
                "the node recognises probes only by their content (learn-probe-sources = false and no probe-source-addresses), so a probe to these ports would restore the container; set one of them on the node, or disable-probe-detection"
            )
        )
    }

    /// Whether new connections of this container queue for its restored listener (decision 0046)
    /// on a node where `probesRecognisedWithoutContent`: `listener-handover` on, and probes
    /// recognisable without the activator reading them — by their connection (the node's
    /// `probe-source-addresses`, or kubelet's own connections recognised when kubelet opens them,
    /// node setting `learn-probe-sources`, decisions 0040 and 0052) or not at all
    /// (`disable-probe-detection`). Otherwise a probe recognised only by its content (an HTTP
    /// `kube-probe/` user agent, a TCP connect-and-close) would wake the container, so the activator
    /// keeps the ports.
    public func listenerHandoverApplies(probesRecognisedWithoutContent: Bool) -> Bool {
        listenerHandover && (probesRecognisedWithoutContent || disableProbeDetection)
    }

    /// Parses the annotations of one container's OCI spec.
    ///
    /// Every present zeropod annotation is checked, also `ports-map` entries of other containers,
    /// so a typo fails creation of the container instead of being ignored.
    /// - Parameter annotations: the OCI spec's `annotations` object.
    /// - Throws: `ConfigError` naming the first annotation (in `ZeropodAnnotation` order) whose value
    ///   is malformed, the value and the reason.
    public init(annotations: [String: String]) throws(ConfigError) {
        containerName = annotations[CRIAnnotation.containerName] ?? ""
        containerType = ContainerType(annotation: annotations[CRIAnnotation.containerType])
        podName = annotations[CRIAnnotation.sandboxName] ?? ""
        podNamespace = annotations[CRIAnnotation.sandboxNamespace] ?? ""
        podUID = annotations[CRIAnnotation.sandboxUID] ?? ""

        func value(_ key: ZeropodAnnotation) -> String? {
            guard let v = annotations[key.rawValue], !v.isEmpty else { return nil }
            return v
        }

        scaleDownDuration = Self.defaultScaleDownDuration
        if let v = value(.scaledownDuration) {
            let d = try Self.duration(v, key: .scaledownDuration)
            scaleDownDuration = d == .zero ? nil : d
        }

        containerNames = []
        if let v = value(.containerNames) { containerNames = try Self.nameList(v, key: .containerNames) }

        ports = []
        if let v = value(.portsMap) {
            for (name, list) in try PortsMap.parse(v, key: ZeropodAnnotation.portsMap.rawValue)
            where name == containerName {
                ports += list
            }
        }

        disableCheckpointing = try Self.bool(value(.disableCheckpointing), key: .disableCheckpointing)
        preDump = try Self.bool(value(.preDump), key: .preDump)
        disableProbeDetection = try Self.bool(value(.disableProbeDetection), key: .disableProbeDetection)

        probeBufferSize = Self.defaultProbeBufferSize
        if let v = value(.probeBufferSize) {
            probeBufferSize = try Self.integer(v, key: .probeBufferSize, in: 1...Self.maximumProbeBufferSize)
        }

        connectTimeout = Self.defaultConnectTimeout
        if let v = value(.connectTimeout) {
            let d = try Self.duration(v, key: .connectTimeout)
            if d > .zero { connectTimeout = d }
        }
        proxyTimeout = nil
        if let v = value(.proxyTimeout) {
            let d = try Self.duration(v, key: .proxyTimeout)
            if d > .zero { proxyTimeout = d }
        }

        migrate = []
        if let v = value(.migrate) { migrate = try Self.nameList(v, key: .migrate) }
        liveMigrate = nil
        if let v = value(.liveMigrate) {
            if let problem = Self.nameProblem(v) {
                throw ConfigError(key: ZeropodAnnotation.liveMigrate.rawValue, value: v, reason: .invalidName(problem))
            }
            liveMigrate = v
        }
        disableMigrateData = try Self.bool(value(.disableMigrateData), key: .disableMigrateData)
        dryRun = try Self.bool(value(.dryRun), key: .dryRun)

        wakeGroup = nil
        if let v = annotations[ZeropodSwiftAnnotation.wakeGroup.rawValue], !v.isEmpty {
            if let problem = Self.dnsLabelProblem(v) {
                throw ConfigError(
                    key: ZeropodSwiftAnnotation.wakeGroup.rawValue,
                    value: v,
                    reason: .invalidGroupName(problem)
                )
            }
            wakeGroup = v
        }

        func swiftBool(_ key: ZeropodSwiftAnnotation, default fallback: Bool) throws(ConfigError) -> Bool {
            guard let v = annotations[key.rawValue], !v.isEmpty else { return fallback }
            guard let b = GoBool.parse(v) else {
                throw ConfigError(key: key.rawValue, value: v, reason: .invalidBoolean)
            }
            return b
        }
        keepConnections = try swiftBool(.keepConnections, default: true)
        listenerHandover = try swiftBool(.listenerHandover, default: true)
        speaksFirstPorts = []
        if let v = annotations[ZeropodSwiftAnnotation.speaksFirstPorts.rawValue], !v.isEmpty {
            speaksFirstPorts = try PortList.parse(v, key: ZeropodSwiftAnnotation.speaksFirstPorts.rawValue)
        }
    }

    /// Whether zeropod manages this container: never the sandbox; otherwise every container when
    /// `container-names` is empty, else only the named ones.
    public var isManaged: Bool {
        if containerType == .sandbox { return false }
        return containerNames.isEmpty || containerNames.contains(containerName)
    }

    /// Whether scale-down is enabled (`scaledown-duration` is not zero).
    public var scaleDownEnabled: Bool { scaleDownDuration != nil }

    /// Whether this container is migrated (offline) on pod deletion: named in `migrate` and
    /// checkpointing is not disabled.
    public var migrationEnabled: Bool { !disableCheckpointing && migrate.contains(containerName) }

    /// Whether this container is migrated live: `live-migrate` names it (an absent annotation never
    /// matches, unlike the original, where two empty names matched).
    public var liveMigrationEnabled: Bool { liveMigrate != nil && liveMigrate == containerName }

    /// Whether any kind of migration applies to this container.
    public var anyMigrationEnabled: Bool { migrationEnabled || liveMigrationEnabled }

    /// Keys under `zeropod.ctrox.dev/` or `zeropod-swift/` that are neither container settings nor
    /// manager keys, sorted. The original ignores them; the shim logs them as likely typos.
    public static func unrecognizedKeys(in annotations: [String: String]) -> [String] {
        let known = Set(ZeropodAnnotation.allCases.map(\.rawValue)).union(managerAnnotationKeys)
            .union(ZeropodSwiftAnnotation.allCases.map(\.rawValue))
        return annotations.keys.filter {
            ($0.hasPrefix(ZeropodAnnotation.prefix) || $0.hasPrefix(ZeropodSwiftAnnotation.prefix))
                && !known.contains($0)
        }.sorted()
    }

    /// Longest DNS label (RFC 1123), as Kubernetes checks names.
    public static let maximumDNSLabelLength = 63

    /// Why `name` is not an RFC 1123 DNS label (what Kubernetes requires of most names), or nil:
    /// 1 to 63 characters, lower-case ASCII letters, digits and `-`, starting and ending with a
    /// letter or digit.
    public static func dnsLabelProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        let length = name.utf8.count
        if length > maximumDNSLabelLength { return "is \(length) bytes long, longer than \(maximumDNSLabelLength)" }
        for (i, s) in name.unicodeScalars.enumerated() {
            switch s {
            case "a"..."z", "0"..."9", "-": continue
            default: return "contains \(quoted(String(s))) at position \(i + 1): only a-z, 0-9 and - are allowed"
            }
        }
        if name.hasPrefix("-") { return "starts with \"-\"" }
        if name.hasSuffix("-") { return "ends with \"-\"" }
        return nil
    }

    // MARK: value parsers

    private static func duration(_ v: String, key: ZeropodAnnotation) throws(ConfigError) -> Duration {
        let d: Duration
        do {
            d = try GoDuration.parse(v)
        } catch {
            throw ConfigError(key: key.rawValue, value: v, reason: .invalidDuration(error.description))
        }
        guard d >= .zero else {
            throw ConfigError(key: key.rawValue, value: v, reason: .invalidDuration("must not be negative"))
        }
        return d
    }

    private static func bool(_ v: String?, key: ZeropodAnnotation) throws(ConfigError) -> Bool {
        guard let v else { return false }
        guard let b = GoBool.parse(v) else { throw ConfigError(key: key.rawValue, value: v, reason: .invalidBoolean) }
        return b
    }

    /// Go's `strconv.Atoi` syntax (optional sign, decimal digits), then a range check.
    private static func integer(
        _ v: String,
        key: ZeropodAnnotation,
        in range: ClosedRange<Int>
    ) throws(ConfigError) -> Int {
        guard let n = Int(v, radix: 10) else {
            throw ConfigError(key: key.rawValue, value: v, reason: .invalidInteger("not a decimal number"))
        }
        guard range.contains(n) else {
            throw ConfigError(
                key: key.rawValue,
                value: v,
                reason: .invalidInteger("must be between \(range.lowerBound) and \(range.upperBound)")
            )
        }
        return n
    }

    private static func nameList(_ v: String, key: ZeropodAnnotation) throws(ConfigError) -> [String] {
        let names = v.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        for (i, name) in names.enumerated() {
            if let problem = nameProblem(name) {
                throw ConfigError(
                    key: key.rawValue,
                    value: v,
                    reason: .invalidNameList("name \(i + 1) \(quoted(name)) \(problem)")
                )
            }
        }
        return names
    }

    /// Why `name` cannot be a container name, or nil. Only emptiness, white space, control
    /// characters and the list separators are refused; Kubernetes validates the rest.
    static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        // Characters, as the list is split: U+037E (Greek question mark) is canonically ";".
        if let separator = name.first(where: { $0 == "," || $0 == ";" || $0 == "=" }) {
            return "contains \(quoted(String(separator)))"
        }
        for s in name.unicodeScalars {
            if s.properties.isWhitespace || s.value < 0x20 || s.value == 0x7f {
                return "contains white space or a control character"
            }
        }
        return nil
    }
}

/// A comma list of TCP ports (`3306,25`), as `zeropod-swift/speaks-first-ports` takes it.
public enum PortList {
    /// Parses `value`: ports in 1...65535 written as decimal digits, separated by `,`, each once.
    /// An empty element (`25,,3306`, a trailing `,`) is an error.
    /// - Parameter key: the annotation key, for the error.
    /// - Throws: `ConfigError` with reason `invalidPortList` naming the element and why.
    public static func parse(_ value: String, key: String) throws(ConfigError) -> Set<UInt16> {
        func fail(_ detail: String) -> ConfigError {
            ConfigError(key: key, value: value, reason: .invalidPortList(detail))
        }
        var ports = Set<UInt16>()
        for (i, element) in value.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            guard !element.isEmpty, element.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw fail("element \(i + 1) \(quoted(String(element))) is not a decimal number")
            }
            guard let port = UInt16(element), port > 0 else {
                throw fail("element \(i + 1) \(quoted(String(element))) is not between 1 and 65535")
            }
            guard ports.insert(port).inserted else { throw fail("port \(port) is listed twice") }
        }
        return ports
    }
}

/// The `ports-map` syntax: `name=port[,port...]` entries separated by `;`.
public enum PortsMap {
    /// Parses every entry, in order; a name may repeat (its ports are appended by the caller).
    ///
    /// Each entry needs exactly one `=`, a non-empty container name and ports in 1...65535 written
    /// as decimal digits (Go's `strconv.ParseUint(_, 10, 16)` syntax). A trailing `;` makes an empty
    /// entry and is an error, as in the original.
    /// - Parameter key: the annotation key, for the error.
    /// - Throws: `ConfigError` with reason `invalidPortsMap`.
    public static func parse(_ value: String, key: String) throws(ConfigError) -> [(name: String, ports: [UInt16])] {
        func fail(_ detail: String) -> ConfigError {
            ConfigError(key: key, value: value, reason: .invalidPortsMap(detail))
        }
        var out: [(name: String, ports: [UInt16])] = []
        for entry in value.split(separator: ";", omittingEmptySubsequences: false) {
            let parts = entry.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw fail("entry \(quoted(String(entry))) is not name=port[,port...]") }
            let name = String(parts[0])
            if let problem = ContainerConfig.nameProblem(name) {
                throw fail("container name \(quoted(name)) in entry \(quoted(String(entry))) \(problem)")
            }
            var ports: [UInt16] = []
            for p in parts[1].split(separator: ",", omittingEmptySubsequences: false) {
                guard !p.isEmpty, p.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                    throw fail("port \(quoted(String(p))) of \(quoted(name)) is not a decimal number")
                }
                guard let n = UInt16(p), n > 0 else {
                    throw fail("port \(quoted(String(p))) of \(quoted(name)) is not between 1 and 65535")
                }
                ports.append(n)
            }
            out.append((name, ports))
        }
        return out
    }
}
