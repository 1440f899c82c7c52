// Node-level settings, read by the shim and the manager from one small text file. The format is
// line based `key = value` (docs/configuration.md) because ZPCore has no JSON parser (standard
// library only) and the file has only scalar settings and one list.

/// Settings that apply to every zeropod container on a node.
///
/// Text format (`NodeConfig(parsing:source:)`): one `key = value` per line; `#` starts a comment
/// line; blank lines are ignored; white space around keys, values and list elements is trimmed;
/// keys are unique; an unknown key is an error (a typo must not silently change behaviour).
public struct NodeConfig: Equatable, Sendable {
    /// Where the shim and the manager look for the file unless told otherwise.
    public static let defaultPath = "/etc/zeropod/node.conf"

    /// The setting names of the text format.
    public enum Key: String, CaseIterable, Sendable {
        /// Comma list of IPv4/IPv6 addresses whose connections are probes (the kubelet's addresses).
        case probeSourceAddresses = "probe-source-addresses"
        /// Recognise kubelet's own connections by the process that opens them (decision 0040).
        case learnProbeSources = "learn-probe-sources"
        /// Whether traffic from loopback addresses counts as activity.
        case loopbackIsActivity = "loopback-is-activity"
        /// Whether an open (long-lived) connection counts as activity and prevents scale-down.
        case openConnectionsAreActivity = "open-connections-are-activity"
        /// The CRIU binary: an absolute path or a command name looked up on PATH.
        case criuPath = "criu-path"
        /// The runc binary: an absolute path or a command name looked up on PATH.
        case runcPath = "runc-path"
        /// Directory for checkpoint images and work files.
        case stateDirectory = "state-dir"
        /// Directory under bpffs for pinned maps and links. Not supported yet: the shim keeps its
        /// redirectors in memory and pins nothing, so the parser refuses the key (any value) with
        /// ``ConfigError/Reason/notSupportedYet(_:)`` instead of ignoring it.
        case bpfPinDirectory = "bpf-pin-dir"
        /// Directory for the shims' status sockets, the node socket and the wake group registry.
        case runDirectory = "run-dir"
        /// Whether a scaled-down container comes back with a lazy (on-demand) memory restore:
        /// `auto`, `on` or `off` (see ``LazyRestoreMode``).
        case lazyRestore = "lazy-restore"
        /// CRIU's log level (0-4) for the shim's dumps and restores.
        case criuLogLevel = "criu-log-level"
        /// How long a live migration's page transfer may take on the shims (Go duration, positive).
        case pagesTransferTimeout = "pages-transfer-timeout"
        /// Whether checkpoints leave zero pages out of the images (decision 0066).
        case skipZeroPages = "skip-zero-pages"

        /// The keys a file may set; the others are known but refused as not supported yet.
        public static var supported: [Key] { allCases.filter { $0 != .bpfPinDirectory } }
    }

    /// Addresses whose connections never count as activity, whichever process opens them. IPv4
    /// entries also match their IPv4-mapped IPv6 form (see `isProbeSource(_:)`). At most
    /// ``maximumProbeSourceAddresses`` distinct addresses.
    public var probeSourceAddresses: [IPAddress] = []
    /// At most this many distinct `probe-source-addresses` (an IPv4 address and its IPv4-mapped
    /// form count once): the size of the pods' eBPF map.
    public static let maximumProbeSourceAddresses = 64
    /// Recognise kubelet's own connections without configuration: connections that a process named
    /// kubelet (or k3s, k3s-server, k3s-agent, kubelite) opens from the node's network namespace
    /// never count as activity; other traffic from the node's address does (decision 0040).
    public var learnProbeSources = true
    /// Whether connections from loopback addresses count as activity (the original ignored them).
    public var loopbackIsActivity = false
    /// Whether an open connection counts as activity, so websockets and streams keep a container up.
    public var openConnectionsAreActivity = true
    /// The CRIU binary.
    public var criuPath = "/usr/local/sbin/criu"
    /// The runc binary.
    public var runcPath = "runc"
    /// Directory for checkpoint images (`<state-dir>/i/<containerd namespace>/<container-id>`, see
    /// ``NodeLayout``).
    /// Not the original's `/var/lib/zeropod`, so both runtimes can share a node.
    public var stateDirectory = "/var/lib/zeropod-swift"
    /// Directory for sockets and registries: the shims' status sockets (`<run-dir>/s/<shim>.sock`),
    /// the wake group registry (`<run-dir>/wake-groups`); see ``NodeLayout``. At most
    /// ``NodeLayout/maximumRunDirectoryLength`` bytes, so the sockets fit in `sun_path`.
    public var runDirectory = "/run/zeropod-swift"
    /// Whether restores after a checkpoint are lazy (`criu lazy-pages` serves memory on demand).
    public var lazyRestore = LazyRestoreMode.auto
    /// CRIU's log level for the shim's dumps and restores: 0 none, 1 errors, 2 warnings, 3 info,
    /// 4 debug. At 4 CRIU writes a line per page run (~17,000 `write`s for a WordPress restore,
    /// ~30 % of its time here: docs/decisions/0036-restore-path.md); errors and warnings, which
    /// failure messages quote, are kept at 2. Raise it to debug a failing checkpoint or restore.
    public var criuLogLevel = 2
    /// The shims' bound on a live migration's page transfer (decision 0058): how long the source's
    /// lazy dump waits for the target to take every page (then CRIU is stopped, the processes run
    /// on and the Kill signals them as without migration) and how long the target's lazy-pages
    /// daemon may take (then the restored process is killed and the container starts from
    /// scratch). The original's `-pages-transfer-timeout` default, 5 minutes. Positive.
    public var pagesTransferTimeout = Duration.seconds(300)
    /// Whether the shim's checkpoints leave the all-zero pages of private anonymous mappings out of
    /// the images (zeropod's CRIU build; decision 0066). A restore then neither reads nor faults
    /// them in: they read as zeros, as they did. MariaDB's 75 MiB of dumped memory is three
    /// quarters zero pages. Turn it off to get CRIU's own images, page for page.
    public var skipZeroPages = true
    /// The largest `pages-transfer-timeout` accepted: a day (a source's Kill is held that long).
    public static let maximumPagesTransferTimeout = Duration.seconds(86_400)

    /// The defaults.
    public init() {}

    /// Parses the text format.
    /// - Parameters:
    ///   - text: the file's contents.
    ///   - source: the file name used in error locations (`source:line`).
    /// - Throws: `ConfigError` with `location` set, for a malformed line, an unknown or repeated key,
    ///   or a bad value.
    public init(parsing text: String, source: String = NodeConfig.defaultPath) throws(ConfigError) {
        self.init()
        var seen: [Key: Int] = [:]
        for (index, rawLine) in text.split(
            omittingEmptySubsequences: false,
            whereSeparator: { $0 == "\n" || $0 == "\r\n" }
        ).enumerated() {
            let lineNumber = index + 1
            let location = "\(source):\(lineNumber)"
            let line = trim(rawLine)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError(key: "", value: line, reason: .malformedLine, location: location)
            }
            let name = trim(line[..<eq])
            let value = trim(line[line.index(after: eq)...])
            guard !name.isEmpty else {
                throw ConfigError(key: "", value: line, reason: .malformedLine, location: location)
            }
            guard let key = Key(rawValue: name) else {
                throw ConfigError(key: name, value: value, reason: .unknownSetting, location: location)
            }
            if let first = seen[key] {
                throw ConfigError(
                    key: name,
                    value: value,
                    reason: .duplicateSetting(firstLine: first),
                    location: location
                )
            }
            seen[key] = lineNumber
            func fail(_ reason: ConfigError.Reason) -> ConfigError {
                ConfigError(key: name, value: value, reason: reason, location: location)
            }
            func bool() throws(ConfigError) -> Bool {
                guard let b = GoBool.parse(value) else { throw fail(.invalidBoolean) }
                return b
            }
            func command() throws(ConfigError) -> String {
                if value.isEmpty { throw fail(.invalidPath("is empty")) }
                if value.contains("/") && !value.hasPrefix("/") {
                    throw fail(.invalidPath("must be absolute or a bare command name"))
                }
                return value
            }
            func directory() throws(ConfigError) -> String {
                guard value.hasPrefix("/") else { throw fail(.invalidPath("must be absolute")) }
                return value
            }
            switch key {
            case .probeSourceAddresses:
                probeSourceAddresses = []
                if value.isEmpty { continue }
                for (i, element) in value.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
                    let text = trim(element)
                    guard let address = IPAddress(text) else {
                        throw fail(.invalidAddress("element \(i + 1) \(quoted(text)) is not an IPv4 or IPv6 address"))
                    }
                    probeSourceAddresses.append(address)
                }
                let distinct = Set(probeSourceAddresses.map { $0.unmappedV4 ?? $0 }).count
                if distinct > Self.maximumProbeSourceAddresses {
                    throw fail(
                        .invalidAddress(
                            "\(distinct) addresses; at most \(Self.maximumProbeSourceAddresses) are supported"
                        )
                    )
                }
            case .learnProbeSources: learnProbeSources = try bool()
            case .skipZeroPages: skipZeroPages = try bool()
            case .loopbackIsActivity: loopbackIsActivity = try bool()
            case .openConnectionsAreActivity: openConnectionsAreActivity = try bool()
            case .criuPath: criuPath = try command()
            case .runcPath: runcPath = try command()
            case .stateDirectory: stateDirectory = try directory()
            case .bpfPinDirectory:
                throw fail(
                    .notSupportedYet(
                        "the shim keeps its eBPF links and maps in memory and pins nothing; remove the line"
                    )
                )
            case .runDirectory:
                runDirectory = try directory()
                if runDirectory.utf8.count > NodeLayout.maximumRunDirectoryLength {
                    throw fail(
                        .invalidPath(
                            "is \(runDirectory.utf8.count) bytes long; at most \(NodeLayout.maximumRunDirectoryLength), "
                                + "so that <run-dir>/s/<64-character shim name>.sock stays within the \(NodeLayout.maximumSocketPathLength) bytes "
                                + "a unix socket client (SwiftNIO) accepts"
                        )
                    )
                }
            case .lazyRestore:
                guard let mode = LazyRestoreMode(rawValue: value) else {
                    throw fail(.invalidChoice(LazyRestoreMode.allCases.map(\.rawValue)))
                }
                lazyRestore = mode
            case .criuLogLevel:
                guard let level = Int(value), (0...4).contains(level) else {
                    throw fail(.invalidChoice((0...4).map(String.init)))
                }
                criuLogLevel = level
            case .pagesTransferTimeout:
                let duration: Duration
                do {
                    duration = try GoDuration.parse(value)
                } catch {
                    throw fail(.invalidDuration(error.description))
                }
                guard duration > .zero else {
                    throw fail(.invalidDuration("must be positive (the pages need time to move)"))
                }
                guard duration <= Self.maximumPagesTransferTimeout else {
                    throw fail(.invalidDuration("at most \(GoDuration.format(Self.maximumPagesTransferTimeout))"))
                }
                pagesTransferTimeout = duration
            }
        }
    }

    /// Every form of every configured probe source: IPv4 addresses with their IPv4-mapped IPv6
    /// twins, so a probe matches whether it arrives on an IPv4 or a dual-stack IPv6 socket.
    public var probeSourceMatchSet: Set<IPAddress> {
        probeSourceAddresses.reduce(into: []) { $0.formUnion($1.matchingForms) }
    }

    /// Whether `address` (IPv4, IPv6 or IPv4-mapped) is a configured probe source.
    public func isProbeSource(_ address: IPAddress) -> Bool {
        probeSourceMatchSet.contains(address)
    }

    /// The settings in the text format, one `key = value` per line, every key present; parsing the
    /// result gives back an equal value.
    public var rendered: String {
        Key.supported.map { key -> String in
            let value: String
            switch key {
            case .probeSourceAddresses: value = probeSourceAddresses.map(\.description).joined(separator: ", ")
            case .learnProbeSources: value = String(learnProbeSources)
            case .loopbackIsActivity: value = String(loopbackIsActivity)
            case .openConnectionsAreActivity: value = String(openConnectionsAreActivity)
            case .criuPath: value = criuPath
            case .runcPath: value = runcPath
            case .stateDirectory: value = stateDirectory
            case .bpfPinDirectory: preconditionFailure("bpf-pin-dir is not a supported key")
            case .runDirectory: value = runDirectory
            case .lazyRestore: value = lazyRestore.rawValue
            case .criuLogLevel: value = String(criuLogLevel)
            case .pagesTransferTimeout: value = GoDuration.format(pagesTransferTimeout)
            case .skipZeroPages: value = String(skipZeroPages)
            }
            return "\(key.rawValue) = \(value)"
        }.joined(separator: "\n") + "\n"
    }
}

/// `s` without leading and trailing spaces, tabs and carriage returns.
private func trim<S: StringProtocol>(_ s: S) -> String {
    var scalars = Substring(s).unicodeScalars[...]
    while let f = scalars.first, f == " " || f == "\t" || f == "\r" { scalars.removeFirst() }
    while let l = scalars.last, l == " " || l == "\t" || l == "\r" { scalars.removeLast() }
    return String(String.UnicodeScalarView(scalars))
}
