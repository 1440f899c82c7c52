import ZPCore

// The installer's edge: reads what is on the node, asks the pure planner what to change,
// installs the shim, CRIU and node settings, writes the config change last (so containerd never
// names a missing shim), records everything for --uninstall, and restarts containerd.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the installer is asked to do, as the command line gives it.
public struct InstallerOptions: Sendable, Equatable {
    /// containerd, k3s or rke2.
    public var flavour: ContainerdFlavour = .containerd
    /// containerd's main config (k3s/rke2: the rendered config.toml); nil: the flavour's default.
    public var configPath: String?
    /// Where our files go (`-host-opt-path`).
    public var optPath = "/opt/zeropod"
    /// The node settings file the shim reads.
    public var nodeConfigPath = NodeConfig.defaultPath
    /// The shim binary to install.
    public var shimSource = "containerd-shim-zeropod-v2"
    /// The CRIU binary to install (with its libraries).
    public var criuSource = "/usr/local/sbin/criu"
    /// containerd's version, when given instead of asking the binary.
    public var containerdVersion: String?
    /// The containerd binary to ask (`--version`); nil: the flavour's default.
    public var containerdBinary: String?
    /// containerd's gRPC socket, asked for its version; nil: the flavour's default.
    public var containerdAddress: String?
    /// Seconds any one program may run (and the restart may take).
    public var timeout: Double = 60
    /// Whether and how to restart containerd.
    public var restart: RestartPolicy = .auto
    /// Whether systemd runs the node; nil: look for `/run/systemd/system`.
    public var systemdRuns: Bool?
    /// Where the shim's status sockets live (for "shims still running" on uninstall).
    public var shimSocketDirectory = "/run/zeropod-swift/s"
    /// Uninstall even while zeropod shims run.
    public var force = false
    /// A folder on containerd's `PATH` where, for containerd below 1.7.1 (which ignores
    /// `runtime_path`), the installer links `containerd-shim-zeropod-v2` to the installed shim.
    /// `/usr/local/bin` is on the default `PATH` systemd gives containerd's unit.
    public var shimLinkDirectory = "/usr/local/bin"

    /// Defaults.
    public init() {}

    /// The main config path in effect.
    public var effectiveConfigPath: String { configPath ?? flavour.defaultConfigDirectory + "/config.toml" }
    /// containerd's socket in effect.
    public var effectiveContainerdAddress: String { containerdAddress ?? flavour.defaultSocket }
    /// The containerd binary in effect.
    public var effectiveContainerdBinary: String { containerdBinary ?? flavour.defaultBinary }
    /// `<opt>/bin/containerd-shim-zeropod-v2`.
    public var installedShim: String { optPath + "/bin/containerd-shim-zeropod-v2" }
    /// `<shimLinkDirectory>/containerd-shim-zeropod-v2`: the link containerd below 1.7.1 finds.
    public var linkedShim: String { shimLinkDirectory + "/" + HandlerSettings.shimBinaryName }
    /// `<opt>/bin/criu`.
    public var installedCRIU: String { optPath + "/bin/criu" }
    /// `<opt>/state`.
    public var stateFolder: String { optPath + "/state" }
}

/// What an install or uninstall did.
public struct InstallerReport: Sendable, Equatable {
    /// Whether any containerd config file changed.
    public var configChanged: Bool
    /// The restart decision.
    public var restart: RestartAction
    /// Units restarted.
    public var restarted: [String] = []
}

/// Installs and uninstalls zeropod-swift on a node.
public struct Installer: Sendable {
    /// The options.
    public var options: InstallerOptions
    /// File access.
    public var files: HostFiles
    /// Program runner.
    public var commands: any HostCommands
    /// Where progress lines go.
    public var log: @Sendable (String) -> Void

    /// An installer with these options.
    public init(
        options: InstallerOptions,
        files: HostFiles = HostFiles(),
        commands: any HostCommands = LocalCommands(),
        log: @escaping @Sendable (String) -> Void
    ) {
        self.options = options
        self.files = files
        self.commands = commands
        self.log = log
    }

    // MARK: reading the node

    /// The running containerd's release: the version given, or what the binary says.
    /// - Throws: `InstallerError` if it cannot be told.
    public func release() throws(InstallerError) -> ContainerdRelease {
        if let given = options.containerdVersion {
            guard let r = ContainerdRelease(versionText: given) else {
                throw InstallerError("--containerd-version \(given): not a version like 1.7.22 or 2.1.9")
            }
            return r
        }
        let binary = options.effectiveContainerdBinary
        let r = commands.run(binary, ["--version"], timeout: options.timeout)
        guard r.status == 0 else {
            throw InstallerError(
                "cannot ask containerd for its version (\(binary) --version: "
                    + "\(r.errors.trimmedLine.isEmpty ? "status \(r.status)" : r.errors.trimmedLine)); "
                    + "give it with --containerd-version"
            )
        }
        return try ContainerdRelease(versionOutput: r.output)
    }

    /// The config files as they are now.
    /// - Throws: `InstallerError` for unreadable files.
    public func readInputs(release: ContainerdRelease) throws(InstallerError) -> ConfigInputs {
        let mainPath = options.effectiveConfigPath
        var inputs = ConfigInputs(
            flavour: options.flavour,
            release: release,
            mainPath: mainPath,
            main: try files.readText(mainPath)
        )
        inputs.dropIn = try files.readText(inputs.dropInPath)
        if options.flavour.rendersTemplate {
            inputs.templateV2 = try files.readText(inputs.templateV2Path)
            inputs.templateV3 = try files.readText(inputs.templateV3Path)
        }
        // Files the main config imports (containerd resolves relative entries against its folder).
        if let main = inputs.main, let doc = try? TOMLDocument(path: mainPath, text: main),
            let facts = try? ContainerdConfigFacts(doc)
        {
            for entry in facts.imports {
                let pattern = entry.hasPrefix("/") ? entry : inputs.configDirectory + "/" + entry
                for path in files.glob(pattern) where path != inputs.dropInPath && path != mainPath {
                    if let text = try files.readText(path) { inputs.imported.append((path, text)) }
                }
            }
        }
        return inputs
    }

    // MARK: install

    /// Installs (or brings up to date) everything; changes nothing when all is in place.
    /// - Throws: `InstallerError`; a refusal changes nothing, a later failure rolls the config back.
    public func install() throws(InstallerError) -> InstallerReport {
        let release = try release()
        let inputs = try readInputs(release: release)
        let handler = HandlerSettings(shimPath: options.installedShim)
        let plan = try ConfigPlanner.plan(inputs, handler: handler)
        log("\(release): config \(inputs.mainPath) (\(plan.mode))")
        for note in plan.notes { log("  \(note)") }
        try checkOptFolder()

        var state = try InstallState.load(from: options.stateFolder, files: files) ?? InstallState()
        // A refusal about the link changes nothing: checked before anything is copied.
        if plan.shimOnContainerdPath { _ = try checkShimLink(state) }
        do throws(InstallerError) {
            try installBinaries(&state)
            try installNodeConfig(&state)
        } catch {
            // What was copied so far is recorded, so --uninstall removes it.
            try? state.save(to: options.stateFolder, files: files)
            throw error
        }
        try state.save(to: options.stateFolder, files: files)
        // The shim where containerd finds it (or our old link gone) before the config names it.
        do throws(InstallerError) {
            if plan.shimOnContainerdPath { try linkShim(&state) } else { try unlinkShim(&state) }
        } catch {
            try? state.save(to: options.stateFolder, files: files)
            throw error
        }
        try state.save(to: options.stateFolder, files: files)
        try applyConfig(plan, state: &state)
        try state.save(to: options.stateFolder, files: files)

        let restart = RestartPlanner.decide(
            flavour: options.flavour,
            configChanged: plan.restartNeeded,
            policy: options.restart,
            systemdRuns: systemdRuns,
            systemctl: commands.which("systemctl") != nil,
            configPath: plan.edits.first?.path ?? inputs.mainPath
        )
        return carryOut(restart, configChanged: plan.restartNeeded, configPath: inputs.mainPath)
    }

    var systemdRuns: Bool { options.systemdRuns ?? files.exists("/run/systemd/system") }

    private func carryOut(_ restart: RestartAction, configChanged: Bool, configPath: String) -> InstallerReport {
        var report = InstallerReport(configChanged: configChanged, restart: restart)
        switch restart {
        case .none:
            log("containerd config unchanged: no restart")
        case .manual(let text):
            log(text)
        case .systemd(let units):
            let (restarted, lines) = RestartPlanner.restart(
                units: units,
                commands: commands,
                timeout: options.timeout,
                flavour: options.flavour,
                configPath: configPath
            )
            for line in lines { log(line) }
            report.restarted = restarted
        }
        return report
    }

    /// Refuses an opt folder that others could write to (they could replace the shim containerd runs).
    private func checkOptFolder() throws(InstallerError) {
        guard let st = files.status(options.optPath) else { return }
        guard st.isDirectory else { throw InstallerError("is not a folder", file: options.optPath) }
        if st.uid != 0 || st.permissions & 0o022 != 0 {
            throw InstallerError(
                "is owned by uid \(st.uid) with mode \(String(st.permissions, radix: 8)): others could "
                    + "replace the shim containerd runs; make it root's and 0755, or choose another "
                    + "--host-opt-path",
                file: options.optPath
            )
        }
    }

    private func installBinaries(_ state: inout InstallState) throws(InstallerError) {
        let bin = options.optPath + "/bin"
        let lib = options.optPath + "/lib"
        for dir in [options.optPath, bin, lib] { state.recordDirectories(try files.makeDirectory(dir, mode: 0o755)) }

        let shim = try resolve(options.shimSource, what: "shim")
        try files.copy(from: shim, to: options.installedShim, mode: 0o755)
        state.recordFile(options.installedShim)
        log("installed \(options.installedShim)")

        let criu = try resolve(options.criuSource, what: "CRIU")
        let ldd = commands.run("ldd", [criu], timeout: options.timeout)
        guard ldd.status == 0 else { throw InstallerError("ldd failed: \(ldd.errors.trimmedLine)", file: criu) }
        let libraries = try LddOutput.librariesToCopy(ldd.output, binary: criu)
        for library in libraries {
            let name = String(library.split(separator: "/").last ?? "")
            let target = lib + "/" + name
            try files.copy(from: library, to: target, mode: 0o644)
            state.recordFile(target)
        }
        try files.copy(from: criu, to: options.installedCRIU, mode: 0o755)
        state.recordFile(options.installedCRIU)
        // Its libraries first from ../lib, without changing containerd's environment.
        let patch = commands.run(
            "patchelf",
            ["--set-rpath", "$ORIGIN/../lib", options.installedCRIU],
            timeout: options.timeout
        )
        guard patch.status == 0 else {
            throw InstallerError(
                "patchelf --set-rpath failed (\(patch.errors.trimmedLine)); the installer needs patchelf",
                file: options.installedCRIU
            )
        }
        let check = commands.run(options.installedCRIU, ["--version"], timeout: options.timeout)
        guard check.status == 0, check.output.contains("Version:") else {
            throw InstallerError(
                "the installed CRIU does not run: \(check.errors.trimmedLine)",
                file: options.installedCRIU
            )
        }
        log(
            "installed \(options.installedCRIU) (\(check.output.trimmedLine)) and \(libraries.count) libraries in \(lib)"
        )
    }

    /// Links `<shimLinkDirectory>/containerd-shim-zeropod-v2` to the installed shim, for a
    /// containerd that finds the shim by its `runtime_type` on its `PATH`. Refuses a file there
    /// that the installer did not put there, and a folder others could write to.
    private func linkShim(_ state: inout InstallState) throws(InstallerError) {
        let dir = options.shimLinkDirectory
        let path = options.linkedShim
        let target = options.installedShim
        // A link made earlier in another --shim-link-dir goes.
        for old in state.links where old.path != path {
            if files.linkTarget(old.path) == old.target { try files.remove(old.path) }
            state.links.removeAll { $0.path == old.path }
            log("removed \(old.path) (the link now goes into \(dir))")
        }
        if try checkShimLink(state) { return }
        if !files.exists(dir) { state.recordDirectories(try files.makeDirectory(dir, mode: 0o755)) }
        try files.symlink(path, to: target)
        state.recordLink(path, target: target)
        log("linked \(path) to \(target) (containerd finds the shim on its PATH)")
    }

    /// Whether our link is in place already; refuses a link folder others could write to and a
    /// file at the link's path that the installer did not put there.
    private func checkShimLink(_ state: InstallState) throws(InstallerError) -> Bool {
        let dir = options.shimLinkDirectory
        let path = options.linkedShim
        if let st = files.status(dir) {
            guard st.isDirectory else { throw InstallerError("is not a folder (--shim-link-dir)", file: dir) }
            if st.uid != 0 || st.permissions & 0o022 != 0 {
                throw InstallerError(
                    "is owned by uid \(st.uid) with mode \(String(st.permissions, radix: 8)): others could "
                        + "replace the shim containerd runs; choose another --shim-link-dir",
                    file: dir
                )
            }
        }
        guard files.exists(path) else { return false }
        let current = files.linkTarget(path)
        guard let recorded = state.linkTarget(path), current == recorded else {
            throw InstallerError(
                "exists and was not put there by zeropod-installer; containerd below 1.7.1 runs the "
                    + "shim it finds on its PATH by this name: move it away, or choose another "
                    + "--shim-link-dir",
                file: path
            )
        }
        return current == options.installedShim
    }

    /// Removes our link from containerd's `PATH` when the handler no longer needs it (containerd
    /// upgraded to 1.7.1+); a file there that is not our link is left alone.
    private func unlinkShim(_ state: inout InstallState) throws(InstallerError) {
        for link in state.links {
            if files.linkTarget(link.path) == link.target {
                try files.remove(link.path)
                log("removed \(link.path) (this containerd honours runtime_path)")
            }
        }
        state.links.removeAll()
    }

    private func resolve(_ program: String, what: String) throws(InstallerError) -> String {
        if program.hasPrefix("/") {
            guard files.status(program)?.isRegularFile == true || files.exists(program) else {
                throw InstallerError("the \(what) to install does not exist", file: program)
            }
            return program
        }
        guard let path = commands.which(program) else {
            throw InstallerError("the \(what) to install (\(program)) is not on PATH; give its path")
        }
        return path
    }

    /// The node settings the shim reads: written when absent (or still as we wrote it); a file
    /// the user wrote or changed is left alone.
    private func installNodeConfig(_ state: inout InstallState) throws(InstallerError) {
        let path = options.nodeConfigPath
        let wanted =
            ConfigPlanner.marker + ": node settings for the shim (docs/configuration.md).\n"
            + "# zeropod-installer --uninstall removes this file unless it was changed; once changed, the installer leaves it alone.\n"
            + "criu-path = \(options.installedCRIU)\n"
        let current = try files.readText(path)
        let record = state.managedFile(path)
        if let current, current != wanted, record?.written != current {
            // The user's file: check that it parses and say which CRIU it names.
            let source = String(path.split(separator: "/").last ?? "node.conf")
            do {
                let config = try NodeConfig(parsing: current, source: source)
                if config.criuPath != options.installedCRIU {
                    log(
                        "\(path) is not the installer's: left alone; it names CRIU \(config.criuPath), not \(options.installedCRIU)"
                    )
                } else {
                    log("\(path) is not the installer's: left alone")
                }
            } catch {
                throw InstallerError("does not parse (\(error)); fix it or move it away", file: path)
            }
            return
        }
        if current == wanted { return }
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            state.recordDirectories(try files.makeDirectory(String(path[..<slash]), mode: 0o755))
        }
        try files.writeText(path, wanted, mode: 0o644)
        state.recordWrite(path, before: record == nil ? current : record?.original, written: wanted, mode: 0o644)
        log("wrote \(path)")
    }

    private func applyConfig(_ plan: ConfigPlan, state: inout InstallState) throws(InstallerError) {
        var done: [FileEdit] = []
        do throws(InstallerError) {
            for edit in plan.edits {
                if let after = edit.after {
                    let mode = files.status(edit.path).map { UInt32($0.permissions) } ?? 0o644
                    try files.writeText(edit.path, after, mode: mode_t(mode))
                    guard try files.readText(edit.path) == after else {
                        throw InstallerError("reads back differently from what was written", file: edit.path)
                    }
                    state.recordWrite(edit.path, before: edit.before, written: after, mode: mode)
                } else {
                    try files.remove(edit.path)
                    state.recordRemoval(edit.path)
                }
                done.append(edit)
                log("\(edit.after == nil ? "removed" : "wrote") \(edit.path)")
            }
        } catch {
            // Put back what was already changed, newest first.
            for edit in done.reversed() {
                if let before = edit.before {
                    try? files.writeText(edit.path, before, mode: 0o644)
                } else {
                    try? files.remove(edit.path)
                }
            }
            throw error
        }
    }

    // MARK: uninstall

    /// Restores every config file byte for byte and removes what the installer put on the node.
    /// - Throws: `InstallerError` naming a config file the user changed since (nothing is changed
    ///   then), or zeropod shims that still run (unless `force`).
    public func uninstall() throws(InstallerError) -> InstallerReport {
        guard let state = try InstallState.load(from: options.stateFolder, files: files) else {
            log("nothing installed by zeropod-installer under \(options.optPath) (no \(options.stateFolder)/installed)")
            return InstallerReport(configChanged: false, restart: .none)
        }
        let running = files.list(options.shimSocketDirectory).filter { $0.hasSuffix(".sock") }
        if !running.isEmpty && !options.force {
            throw InstallerError(
                "\(running.count) zeropod shim(s) still run (status sockets here); delete the pods "
                    + "that use RuntimeClass zeropod first, or pass --force",
                file: options.shimSocketDirectory
            )
        }
        // Check everything before changing anything.
        var keep: [String] = []
        for m in state.managed {
            let current = try files.readText(m.path)
            let expected: String? = m.written.isEmpty && m.original != nil ? nil : m.written
            if current == expected { continue }
            if m.path == options.nodeConfigPath {
                keep.append(m.path)
                continue
            }
            throw InstallerError(
                "changed since zeropod-installer wrote it; nothing was uninstalled. Undo that change, or "
                    + "restore the file by hand (the original is in \(options.stateFolder))",
                file: m.path
            )
        }
        var configChanged = false
        for m in state.managed.reversed() where !keep.contains(m.path) {
            if let original = m.original {
                try files.writeText(m.path, original, mode: mode_t(m.mode))
                guard try files.readText(m.path) == original else {
                    throw InstallerError("restored, but reads back differently from the original", file: m.path)
                }
                log("restored \(m.path)")
            } else {
                try files.remove(m.path)
                log("removed \(m.path)")
            }
            if m.path != options.nodeConfigPath { configChanged = true }
        }
        for path in keep { log("left \(path): changed since the installer wrote it") }
        for link in state.links.reversed() {
            if files.linkTarget(link.path) == link.target {
                try files.remove(link.path)
                log("removed \(link.path)")
            } else if files.exists(link.path) {
                log("left \(link.path): no longer the installer's link to \(link.target)")
            }
        }
        for f in state.files.reversed() { try files.remove(f) }
        log("removed \(state.files.count) installed files")
        for name in files.list(options.stateFolder) { try files.remove(options.stateFolder + "/" + name) }
        _ = files.removeDirectoryIfEmpty(options.stateFolder)
        for dir in state.directories.reversed() where !files.removeDirectoryIfEmpty(dir) {
            log("left \(dir): not empty")
        }
        let restart = RestartPlanner.decide(
            flavour: options.flavour,
            configChanged: configChanged,
            policy: options.restart,
            systemdRuns: systemdRuns,
            systemctl: commands.which("systemctl") != nil,
            configPath: options.effectiveConfigPath
        )
        return carryOut(restart, configChanged: configChanged, configPath: options.effectiveConfigPath)
    }
}
