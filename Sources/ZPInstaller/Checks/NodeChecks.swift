import SystemPackage
import ZPBPF
import ZPCheckpoint
import ZPCore
import ZPSystem

// The node checks behind `zeropod doctor` and the installer's pre-flight: kernel features, CRIU,
// runc, containerd and its zeropod handler, bpffs, the state and run folders. Each row says OK,
// missing (zeropod works without it, less well) or blocker (zeropod cannot work), and how to fix it.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The verdict of one check.
public enum CheckStatus: String, Sendable, Equatable {
    /// Present and working.
    case ok = "OK"
    /// Absent; zeropod works without it, with less (the row says what).
    case missing
    /// zeropod cannot work on this node until it is fixed.
    case blocker
    /// Not checked where the checks ran (the row says why and where it is checked instead).
    case notChecked = "not checked"
}

/// One row of the report.
public struct CheckResult: Sendable, Equatable {
    /// Group: kernel, criu, runc, containerd, folders.
    public var area: String
    /// What was checked.
    public var name: String
    /// The verdict.
    public var status: CheckStatus
    /// What was found.
    public var detail: String
    /// How to fix it (empty when OK).
    public var fix: String

    /// A row.
    public init(_ area: String, _ name: String, _ status: CheckStatus, _ detail: String, fix: String = "") {
        self.area = area
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// All rows, and the exit status they give.
public struct NodeCheckReport: Sendable, Equatable {
    /// The rows in order.
    public var results: [CheckResult]

    /// The blockers.
    public var blockers: [CheckResult] { results.filter { $0.status == .blocker } }

    /// 0 without blockers, 1 with.
    public var exitStatus: Int32 { blockers.isEmpty ? 0 : 1 }

    /// The row named `name`.
    public func result(_ name: String) -> CheckResult? { results.first { $0.name == name } }

    /// The report as a table: area, check, status, detail; then the fixes, one per problem.
    public func rendered() -> String {
        let headers = ["AREA", "CHECK", "STATUS", "DETAIL"]
        let rows = results.map { [$0.area, $0.name, $0.status.rawValue, $0.detail] }
        var widths = headers.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < 3 { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i < 3 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : c }
                .joined(separator: "  ")
        }
        var out = [line(headers)] + rows.map(line)
        let problems = results.filter { $0.status != .ok && !$0.fix.isEmpty }
        if !problems.isEmpty {
            out.append("")
            out.append("To fix:")
            for p in problems { out.append("- \(p.name) (\(p.status.rawValue)): \(p.fix)") }
        }
        let b = blockers.count
        out.append("")
        out.append(b == 0 ? "no blockers" : "\(b) blocker\(b == 1 ? "" : "s"): zeropod cannot run on this node")
        return out.joined(separator: "\n") + "\n"
    }
}

/// Where the checks look; every path can be pointed elsewhere (tests take features away this way).
public struct NodeCheckOptions: Sendable, Equatable {
    /// Which checks: the installer's pre-flight skips those about the installation itself.
    public enum Scope: Sendable, Equatable {
        /// Everything (`zeropod doctor`).
        case all
        /// What must hold before installing (kernel, CRIU, runc, containerd's version, folders).
        case prerequisites
    }

    /// Which checks run.
    public var scope: Scope = .all
    /// The CRIU binary (node.conf's `criu-path` when nil).
    public var criuPath: String?
    /// The runc binary (node.conf's `runc-path` when nil).
    public var runcPath: String?
    /// Whether to run runc at all (the installer in a container cannot run the node's runc).
    public var checkRunc = true
    /// containerd's flavour.
    public var flavour: ContainerdFlavour = .containerd
    /// containerd's binary (the flavour's default when nil).
    public var containerdBinary: String?
    /// containerd's version, when given instead of asking the binary.
    public var containerdVersion: String?
    /// Where `containerdVersion` came from, when a caller looked it up (shown in the row).
    public var containerdVersionSource: ContainerdVersionSource?
    /// Why a caller could not learn containerd's version (the row is then a blocker saying so).
    public var containerdVersionFailure: String?
    /// containerd's main config (the flavour's default when nil).
    public var containerdConfig: String?
    /// The handler name.
    public var handlerName = "zeropod"
    /// bpffs.
    public var bpffsPath = "/sys/fs/bpf"
    /// Kernel BTF.
    public var btfPath = "/sys/kernel/btf/vmlinux"
    /// The node settings file.
    public var nodeConfigPath = NodeConfig.defaultPath
    /// The state folder (node.conf's `state-dir` when nil).
    public var stateDirectory: String?
    /// The run folder (node.conf's `run-dir` when nil).
    public var runDirectory: String?
    /// Probe the eBPF features (needs root; loads and attaches programs in a throw-away netns).
    public var probeBPF = true
    /// Seconds any program may run.
    public var timeout: Double = 60
    /// Where a handler with `runtime_type = "io.containerd.zeropod.v2"` (containerd below 1.7.1)
    /// must find `containerd-shim-zeropod-v2`; nil: this program's `PATH` and the folder of the
    /// containerd binary, as containerd looks it up.
    public var shimSearchFolders: [String]?

    /// Defaults: this node as the shim sees it.
    public init() {}
}

/// Runs the node checks.
public struct NodeChecks: Sendable {
    /// Where to look.
    public var options: NodeCheckOptions
    /// Files.
    public var files: HostFiles
    /// Programs.
    public var commands: any HostCommands

    /// Checks with these options.
    public init(
        options: NodeCheckOptions = NodeCheckOptions(),
        files: HostFiles = HostFiles(),
        commands: any HostCommands = LocalCommands()
    ) {
        self.options = options
        self.files = files
        self.commands = commands
    }

    /// Runs every check of the scope and returns the report.
    public func run() -> NodeCheckReport {
        var rows: [CheckResult] = []
        let (node, nodeRow) = nodeConfig()
        rows.append(nodeRow)
        rows += kernel()
        rows += criu(path: options.criuPath ?? node.criuPath)
        rows.append(runc(path: options.runcPath ?? node.runcPath))
        rows += containerd()
        rows += folders(
            state: options.stateDirectory ?? node.stateDirectory,
            run: options.runDirectory ?? node.runDirectory
        )
        return NodeCheckReport(results: rows)
    }

    // MARK: node settings

    private func nodeConfig() -> (NodeConfig, CheckResult) {
        let path = options.nodeConfigPath
        do {
            guard let text = try files.readText(path) else {
                return (NodeConfig(), CheckResult("node", "node settings", .ok, "\(path) absent: defaults"))
            }
            let config = try NodeConfig(parsing: text, source: path)
            return (config, CheckResult("node", "node settings", .ok, path))
        } catch {
            return (
                NodeConfig(),
                CheckResult(
                    "node",
                    "node settings",
                    .blocker,
                    "\(error)",
                    fix: "fix \(path) (docs/configuration.md); the shim ignores a malformed file"
                )
            )
        }
    }

    // MARK: kernel

    private func kernel() -> [CheckResult] {
        var rows: [CheckResult] = []
        var uts = utsname()
        uname(&uts)
        let release = withUnsafePointer(to: uts.release) {
            $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) }
        }
        rows.append(CheckResult("kernel", "kernel", .ok, "Linux \(release)"))
        rows.append(
            files.exists(options.btfPath)
                ? CheckResult("kernel", "BTF", .ok, options.btfPath)
                : CheckResult(
                    "kernel",
                    "BTF",
                    .missing,
                    "no \(options.btfPath)",
                    fix: "a kernel with CONFIG_DEBUG_INFO_BTF=y; zeropod's BPF programs do not need it (no CO-RE), "
                        + "bpftool and kernel diagnostics do"
                )
        )
        if options.probeBPF {
            for f in BPFFeatures.probe(bpffs: FilePath(options.bpffsPath)) {
                let name: String
                if f.name.hasPrefix("bpffs") { name = "bpffs" } else { name = f.name }
                rows.append(
                    f.supported
                        ? CheckResult("kernel", name, .ok, f.name)
                        : CheckResult("kernel", name, .blocker, "\(f.name) missing", fix: f.requirement)
                )
            }
        } else {
            // Without probing: at least whether bpffs is mounted there.
            let isBPF = mountType(options.bpffsPath) == "bpf"
            rows.append(
                isBPF
                    ? CheckResult("kernel", "bpffs", .ok, "bpffs at \(options.bpffsPath)")
                    : CheckResult(
                        "kernel",
                        "bpffs",
                        .blocker,
                        "no bpffs at \(options.bpffsPath)",
                        fix: "mount -t bpf bpf \(options.bpffsPath)"
                    )
            )
        }
        rows.append(cgroupVersion())
        return rows
    }

    private func cgroupVersion() -> CheckResult {
        if mountType("/sys/fs/cgroup") == "cgroup2" {
            return CheckResult("kernel", "cgroup version", .ok, "v2 (unified at /sys/fs/cgroup)")
        }
        if mountType("/sys/fs/cgroup/unified") == "cgroup2" {
            return CheckResult("kernel", "cgroup version", .ok, "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)")
        }
        return CheckResult(
            "kernel",
            "cgroup version",
            .blocker,
            "v1 only (no cgroup2 mount)",
            fix: "boot with a cgroup v2 (or hybrid) hierarchy; sockops activity counting attaches to cgroup v2"
        )
    }

    /// The file system type mounted at exactly `path` (the last such mount in /proc/self/mountinfo).
    func mountType(_ path: String) -> String? {
        guard let info = (try? files.readText("/proc/self/mountinfo")).flatMap({ $0 }) else { return nil }
        return MountInfo.parse(info).last { $0.mountPoint == path }?.fsType
    }

    // MARK: CRIU

    private func criu(path: String) -> [CheckResult] {
        guard let binary = commands.which(path) else {
            return [
                CheckResult(
                    "criu",
                    "criu binary",
                    .blocker,
                    "\(path) not found",
                    fix: "install CRIU 4.2 or later (zeropod-installer puts one in <opt>/bin/criu) and set "
                        + "criu-path in \(options.nodeConfigPath)"
                )
            ]
        }
        var rows = [CheckResult("criu", "criu binary", .ok, binary)]
        let checkpointer = Checkpointer(criuPath: FilePath(binary))
        do {
            let v = try checkpointer.version()
            let text = "\(v.major).\(v.minor).\(v.sublevel ?? 0)"
            let recent = v.major > 4 || (v.major == 4 && v.minor >= 2)
            rows.append(
                recent
                    ? CheckResult("criu", "criu version", .ok, text)
                    : CheckResult(
                        "criu",
                        "criu version",
                        .blocker,
                        "\(text) (older than 4.2)",
                        fix: "CRIU 4.2 or later: 4.1 cannot dump TCP sockets on kernels 6.16+, "
                            + "3.x fails on newer vDSO layouts"
                    )
            )
        } catch {
            rows.append(
                CheckResult(
                    "criu",
                    "criu version",
                    .blocker,
                    "VERSION request failed: \(error)",
                    fix: "a CRIU that runs here (`\(binary) swrk` must start)"
                )
            )
            return rows
        }
        do {
            try checkpointer.check()
            rows.append(CheckResult("criu", "criu check", .ok, "looks good"))
        } catch {
            rows.append(
                CheckResult(
                    "criu",
                    "criu check",
                    .blocker,
                    "\(error)",
                    fix: "run `\(binary) check` and fix what it names"
                )
            )
        }
        let features =
            (try? checkpointer.features(CRIUFeatures(memoryTracking: true, lazyPages: true))) ?? CRIUFeatures()
        rows.append(
            features.lazyPages == true
                ? CheckResult("kernel", "userfaultfd", .ok, "CRIU lazy-pages supported")
                : CheckResult(
                    "kernel",
                    "userfaultfd",
                    .missing,
                    "no lazy restore",
                    fix: "a kernel with CONFIG_USERFAULTFD; without it every restore copies all memory first"
                )
        )
        rows.append(
            features.memoryTracking == true
                ? CheckResult("kernel", "soft-dirty", .ok, "CRIU mem_track supported")
                : CheckResult(
                    "kernel",
                    "soft-dirty",
                    .missing,
                    "no soft-dirty tracking",
                    fix:
                        "a kernel with CONFIG_MEM_SOFT_DIRTY (not on arm64); without it pre-dump=true needs the write-tracking patch (row below) and kernel 6.7+, else it falls back to plain dumps"
                )
        )
        rows.append(rlimitPatch(binary))
        rows.append(zeroPagesPatch(binary))
        rows.append(writeTrackingPatch(binary))
        return rows
    }

    /// Whether the file at `path` holds `marker` (a string a CRIU patch adds); false when unreadable.
    private func file(_ path: String, holds marker: String) -> Bool {
        (try? files.read(path)).flatMap { $0 }.map { contains($0, Array(marker.utf8)) } ?? false
    }

    /// The project's CRIU patches that track writes without soft-dirty after a full restore
    /// (scripts/criu/0007-write-tracking-without-soft-dirty.patch, decision 0077) and from a
    /// pre-dump (scripts/criu/0008-pre-dump-write-tracking.patch, decision 0078): without them every
    /// checkpoint is a full dump.
    private func writeTrackingPatch(_ binary: String) -> CheckResult {
        let afterRestores = file(binary, holds: "ZEROPOD_WP_TRACK")
        let fromPreDumps = afterRestores && file(binary, holds: Checkpointer.writeTrackingScript)
        if afterRestores && !fromPreDumps {
            return CheckResult(
                "criu",
                "write-tracking patch",
                .missing,
                "after full restores only: pre-dump=true falls back to plain dumps without soft-dirty",
                fix: "use the project's current CRIU build (scripts/setup.sh applies scripts/criu/*.patch)"
            )
        }
        return afterRestores
            ? CheckResult(
                "criu",
                "write-tracking patch",
                .ok,
                "present (a checkpoint after a full restore or on a pre-dump writes only the pages written since; kernel 6.7+)"
            )
            : CheckResult(
                "criu",
                "write-tracking patch",
                .missing,
                "absent: every checkpoint is a full dump",
                fix:
                    "use the project's CRIU build (scripts/setup.sh applies scripts/criu/*.patch; the installer image carries it)"
            )
    }

    /// The project's CRIU patch that leaves zero pages out of the images
    /// (scripts/criu/0004-leave-zero-pages-out.patch, decision 0066): without it the node setting
    /// `skip-zero-pages` has no effect (CRIU ignores the variable and writes every page).
    private func zeroPagesPatch(_ binary: String) -> CheckResult {
        let patched =
            file(binary, holds: "ZEROPOD_SKIP_ZERO_PAGES")
        return patched
            ? CheckResult("criu", "zero-pages patch", .ok, "present (skip-zero-pages takes effect)")
            : CheckResult(
                "criu",
                "zero-pages patch",
                .missing,
                "absent: skip-zero-pages has no effect, every page is written and restored",
                fix:
                    "use the project's CRIU build (scripts/setup.sh applies scripts/criu/*.patch; the installer image carries it)"
            )
    }

    /// The project's CRIU patch (scripts/criu/0001-rlimits-from-proc-limits.patch) matters only
    /// where the bounding set lacks CAP_SYS_RESOURCE.
    private func rlimitPatch(_ binary: String) -> CheckResult {
        let patched =
            file(binary, holds: "read from /proc (prlimit refused)")
        let hasSysResource = capabilityInBoundingSet(24)
        switch (patched, hasSysResource) {
        case (true, _):
            return CheckResult("criu", "rlimit patch", .ok, "present")
        case (false, true):
            return CheckResult("criu", "rlimit patch", .ok, "absent, not needed (CAP_SYS_RESOURCE in the bounding set)")
        case (false, false):
            return CheckResult(
                "criu",
                "rlimit patch",
                .blocker,
                "absent and CAP_SYS_RESOURCE is not in the bounding set: CRIU cannot dump processes of other users",
                fix: "use the project's CRIU build (scripts/setup.sh applies scripts/criu/*.patch)"
            )
        }
    }

    private func capabilityInBoundingSet(_ cap: Int) -> Bool {
        guard let status = (try? files.readText("/proc/self/status")).flatMap({ $0 }) else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("CapBnd:") {
            let hex = line.dropFirst("CapBnd:".count).trimmingCharacters(in: " \t")
            if let mask = UInt64(hex, radix: 16) { return mask & (1 << UInt64(cap)) != 0 }
        }
        return false
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard let first = needle.first, haystack.count >= needle.count else { return false }
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }

    // MARK: runc

    private func runc(path runcPath: String) -> CheckResult {
        guard options.checkRunc else {
            return CheckResult(
                "runc",
                "runc",
                .notChecked,
                "not run here (--no-runc-check); `zeropod doctor` on the node checks it"
            )
        }
        let r = commands.run(runcPath, ["--version"], timeout: options.timeout)
        guard r.status == 0, let first = r.output.split(separator: "\n").first else {
            return CheckResult(
                "runc",
                "runc",
                .blocker,
                "\(runcPath) --version failed",
                fix: "install runc (1.1 or later) on containerd's PATH"
            )
        }
        return CheckResult("runc", "runc", .ok, String(first))
    }

    // MARK: containerd

    private func containerd() -> [CheckResult] {
        var rows: [CheckResult] = []
        let release: ContainerdRelease
        if let failure = options.containerdVersionFailure {
            rows.append(
                CheckResult(
                    "containerd",
                    "containerd version",
                    .blocker,
                    failure,
                    fix: "start containerd, or point --containerd-address at its socket (or give --containerd-version)"
                )
            )
            return rows
        }
        do {
            if let given = options.containerdVersion {
                guard let r = ContainerdRelease(versionText: given) else {
                    throw InstallerError("not a version: \(given)")
                }
                release = r
            } else {
                let binary = options.containerdBinary ?? options.flavour.defaultBinary
                let r = commands.run(binary, ["--version"], timeout: options.timeout)
                guard r.status == 0 else { throw InstallerError("\(binary) --version failed: \(r.errors.trimmedLine)") }
                release = try ContainerdRelease(versionOutput: r.output)
            }
            _ = try release.generation()
            rows.append(
                CheckResult(
                    "containerd",
                    "containerd version",
                    .ok,
                    release.text + (options.containerdVersionSource.map { " (\($0))" } ?? "")
                )
            )
        } catch {
            rows.append(
                CheckResult(
                    "containerd",
                    "containerd version",
                    .blocker,
                    "\(error)",
                    fix: "containerd \(ContainerdRelease.supported)"
                )
            )
            return rows
        }
        guard options.scope == .all else { return rows }
        let configPath = options.containerdConfig ?? options.flavour.defaultConfigDirectory + "/config.toml"
        let handler = handlerTable(configPath: configPath)
        switch handler {
        case .failure(let error):
            rows.append(
                CheckResult(
                    "containerd",
                    "handler \(options.handlerName)",
                    .blocker,
                    "\(error)",
                    fix: "run zeropod-installer (or fix the config it names)"
                )
            )
        case .success(nil):
            rows.append(
                CheckResult(
                    "containerd",
                    "handler \(options.handlerName)",
                    .blocker,
                    "not in \(configPath) or its imports",
                    fix: "run zeropod-installer, then restart containerd"
                )
            )
        case .success(let table?):
            rows.append(handlerRow(table, release: release))
            let pod = table["pod_annotations"]?.strings ?? []
            let missing = HandlerSettings.containerAnnotations.filter { !pod.contains($0) }
            rows.append(
                missing.isEmpty
                    ? CheckResult("containerd", "annotations forwarded", .ok, pod.joined(separator: ", "))
                    : CheckResult(
                        "containerd",
                        "annotations forwarded",
                        .missing,
                        "pod_annotations lacks \(missing.joined(separator: ", ")): pods get the default settings",
                        fix: "run zeropod-installer again (it writes pod_annotations)"
                    )
            )
        }
        return rows
    }

    /// Whether the handler starts our shim on this containerd: by `runtime_path` (containerd
    /// 1.7.1+), or, on containerd below 1.7.1 (which ignores `runtime_path`, decision 0023), by
    /// `runtime_type = "io.containerd.zeropod.v2"` with the shim on `PATH`.
    private func handlerRow(_ table: [String: TOMLNode], release: ContainerdRelease) -> CheckResult {
        let name = "handler \(options.handlerName)"
        let type = table["runtime_type"]?.string ?? ""
        let shim = table["runtime_path"]?.string ?? ""
        if type == HandlerSettings.runtimeType && shim.isEmpty {
            guard let found = findShimByName() else {
                return CheckResult(
                    "containerd",
                    name,
                    .blocker,
                    "runtime_type \(type), but \(HandlerSettings.shimBinaryName) is not on PATH",
                    fix: "run zeropod-installer again (it links the shim into a folder on containerd's PATH)"
                )
            }
            return CheckResult("containerd", name, .ok, "runtime_type \(type) (\(found))")
        }
        if !release.honoursRuntimePath && !shim.isEmpty {
            return CheckResult(
                "containerd",
                name,
                .blocker,
                "runtime_path \(shim): containerd \(release.text) ignores it for CRI pods (containerd#8207), "
                    + "so they run on the shim of runtime_type \(type.isEmpty ? "(none)" : type)",
                fix:
                    "run zeropod-installer again (it writes runtime_type \(HandlerSettings.runtimeType) for this containerd)"
            )
        }
        guard !shim.isEmpty, commands.which(shim) != nil else {
            return CheckResult(
                "containerd",
                name,
                .blocker,
                shim.isEmpty ? "no runtime_path" : "runtime_path \(shim) is not an executable",
                fix: "run zeropod-installer again"
            )
        }
        return CheckResult("containerd", name, .ok, "runtime_path \(shim)")
    }

    /// `containerd-shim-zeropod-v2` where containerd below 1.7.1 looks for it, or nil.
    private func findShimByName() -> String? {
        let name = HandlerSettings.shimBinaryName
        if let folders = options.shimSearchFolders {
            return folders.lazy.compactMap { commands.which($0 + "/" + name) }.first
        }
        if let found = commands.which(name) { return found }
        let binary = options.containerdBinary ?? options.flavour.defaultBinary
        guard let slash = binary.lastIndex(of: "/") else { return nil }
        return commands.which(String(binary[...slash]) + name)
    }

    /// The handler's table from the main config or the files it imports (last one wins).
    private func handlerTable(configPath: String) -> Result<[String: TOMLNode]?, InstallerError> {
        do {
            guard let text = try files.readText(configPath) else { return .success(nil) }
            let doc = try TOMLDocument(path: configPath, text: text)
            let facts = try ContainerdConfigFacts(doc)
            var found = facts.runtimes[options.handlerName]?.table
            let dir = configPath.lastIndex(of: "/").map { String(configPath[..<$0]) } ?? "."
            for entry in facts.imports {
                let pattern = entry.hasPrefix("/") ? entry : dir + "/" + entry
                for path in files.glob(pattern) {
                    guard let t = try files.readText(path) else { continue }
                    let f = try ContainerdConfigFacts(try TOMLDocument(path: path, text: t))
                    if let h = f.runtimes[options.handlerName]?.table { found = h }
                }
            }
            return .success(found)
        } catch {
            return .failure(error)
        }
    }

    // MARK: folders

    private func folders(state: String, run: String) -> [CheckResult] {
        [folder("state folder", state), folder("run folder", run)]
    }

    private func folder(_ name: String, _ path: String) -> CheckResult {
        guard let st = files.status(path) else {
            // The shim creates it; its parent must let root do that.
            let parent = path.lastIndex(of: "/").map { String(path[..<$0]) }.flatMap { $0.isEmpty ? "/" : $0 } ?? "/"
            if access(parent, W_OK) == 0 {
                return CheckResult("folders", name, .ok, "\(path) absent (created on first use)")
            }
            return CheckResult(
                "folders",
                name,
                .blocker,
                "\(path) absent and \(parent) not writable",
                fix: "create \(path) (root, 0755) or point node.conf at a writable folder"
            )
        }
        guard st.isDirectory else {
            return CheckResult(
                "folders",
                name,
                .blocker,
                "\(path) is not a folder",
                fix: "remove it or choose another folder in node.conf"
            )
        }
        if st.permissions & 0o022 != 0 || st.uid != 0 {
            return CheckResult(
                "folders",
                name,
                .blocker,
                "\(path) mode \(String(st.permissions, radix: 8)) owner uid \(st.uid): others can write it",
                fix: "chown root \(path) && chmod go-w \(path)"
            )
        }
        guard access(path, W_OK) == 0 else {
            return CheckResult("folders", name, .blocker, "\(path) not writable", fix: "make it writable for root")
        }
        return CheckResult("folders", name, .ok, "\(path) (\(String(st.permissions, radix: 8)))")
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
