// `zeropod-installer`: the command line. Parses flags (the original's single-dash spelling too),
// runs the node checks, then installs or uninstalls. `main.swift` only calls `InstallerCommand.run`.
import ArgumentParser
import ZPCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ContainerdFlavour: ExpressibleByArgument {}
extension RestartPolicy: ExpressibleByArgument {}

/// The installer's command line.
public struct InstallerCommand: ParsableCommand {
    /// Name, abstract and discussion for `--help`.
    public static let configuration = CommandConfiguration(
        commandName: "zeropod-installer",
        abstract:
            "Installs zeropod-swift on this node: the shim, CRIU, node settings and containerd's runtime handler \"zeropod\".",
        discussion: """
            Runs the node checks first and stops on a blocker (--skip-checks overrides). Running it again changes \
            nothing when everything is in place (and does not restart containerd). --uninstall restores containerd's \
            config byte for byte and removes everything it installed. The original zeropod installer's single-dash \
            flags (-runtime k3s, -host-opt-path=/x, -uninstall, -timeout 1m) are accepted too.
            """
    )

    /// containerd, k3s or rke2.
    @Option(name: .customLong("runtime"), help: "containerd, k3s or rke2")
    public var flavour: ContainerdFlavour = .containerd

    /// The main config.
    @Option(
        name: .customLong("config"),
        help: "containerd's config (k3s/rke2: the rendered config.toml); default by --runtime"
    )
    public var configPath: String?

    /// Install root.
    @Option(name: .customLong("host-opt-path"), help: "where the shim, CRIU and its libraries go")
    public var optPath = "/opt/zeropod"

    /// Folder on containerd's PATH for the shim's link (containerd below 1.7.1).
    @Option(
        name: .customLong("shim-link-dir"),
        help: "containerd below 1.7.1 (ignores runtime_path): the folder on containerd's PATH that gets the shim's link"
    )
    public var shimLinkDir = "/usr/local/bin"

    /// Node settings file.
    @Option(name: .customLong("node-config"), help: "the node settings file the shim reads")
    public var nodeConfig = NodeConfig.defaultPath

    /// Shim to install.
    @Option(name: .customLong("shim"), help: "the shim binary to install (default: next to this program)")
    public var shim: String?

    /// CRIU to install.
    @Option(name: .customLong("criu"), help: "the CRIU binary to install with its libraries")
    public var criu = "/usr/local/sbin/criu"

    /// containerd's version instead of asking it.
    @Option(
        name: .customLong("containerd-version"),
        help: "containerd's version, instead of running `containerd --version`"
    )
    public var containerdVersion: String?

    /// containerd binary.
    @Option(
        name: .customLong("containerd-binary"),
        help: "a containerd binary to ask for its version (`--version`) instead of containerd's socket"
    )
    public var containerdBinary: String?

    /// containerd's gRPC socket.
    @Option(
        name: .customLong("containerd-address"),
        help: ArgumentHelp(
            "containerd's socket, asked for its version (Version service); default by --runtime: "
                + "/run/containerd/containerd.sock, k3s and rke2 /run/k3s/containerd/containerd.sock"
        )
    )
    public var containerdAddress: String?

    /// Time limit per program, Go duration.
    @Option(name: .customLong("timeout"), help: "time limit for each program the installer runs (Go duration)")
    public var timeout = "1m"

    /// Restart policy.
    @Option(
        name: .customLong("restart"),
        help: "auto: restart containerd through systemd when it can; never: print what to run"
    )
    public var restart: RestartPolicy = .auto

    /// Uninstall.
    @Flag(name: .customLong("uninstall"), help: "restore containerd's config and remove everything installed")
    public var uninstall = false

    /// Skip checks.
    @Flag(name: .customLong("skip-checks"), help: "install even when the node checks find a blocker")
    public var skipChecks = false

    /// The runc the pre-flight runs.
    @Option(
        name: .customLong("runc"),
        help: "the runc binary the node checks run (`runc --version`); default: the node settings' runc-path"
    )
    public var runc: String?

    /// Skip the runc row.
    @Flag(
        name: .customLong("no-runc-check"),
        help:
            "do not run runc (the installer in a container cannot run the node's runc; `zeropod doctor` on the node checks it)"
    )
    public var noRuncCheck = false

    /// Force uninstall.
    @Flag(name: .customLong("force"), help: "uninstall even while zeropod shims run")
    public var force = false

    /// Parsed by ArgumentParser.
    public init() {}

    /// The installer options these flags mean.
    /// - Throws: `ValidationError` for a bad --timeout.
    public func installerOptions(executable: String) throws -> InstallerOptions {
        var o = InstallerOptions()
        o.flavour = flavour
        o.configPath = configPath
        o.optPath = optPath.count > 1 && optPath.hasSuffix("/") ? String(optPath.dropLast()) : optPath
        guard o.optPath.hasPrefix("/") else {
            throw ValidationError("--host-opt-path \(optPath): must be an absolute path")
        }
        o.nodeConfigPath = nodeConfig
        o.shimLinkDirectory =
            shimLinkDir.count > 1 && shimLinkDir.hasSuffix("/") ? String(shimLinkDir.dropLast()) : shimLinkDir
        guard o.shimLinkDirectory.hasPrefix("/") else {
            throw ValidationError("--shim-link-dir \(shimLinkDir): must be an absolute path")
        }
        o.shimSource = shim ?? Self.besideExecutable(executable, "containerd-shim-zeropod-v2")
        o.criuSource = criu
        o.containerdVersion = containerdVersion
        o.containerdBinary = containerdBinary
        if let containerdAddress {
            guard containerdAddress.hasPrefix("/") else {
                throw ValidationError(
                    "--containerd-address \(containerdAddress): must be the absolute path of a unix socket"
                )
            }
            o.containerdAddress = containerdAddress
        }
        do {
            let ns = try GoDuration.nanoseconds(timeout)
            guard ns > 0 else { throw ValidationError("--timeout \(timeout): must be positive") }
            o.timeout = Double(ns) / 1e9
        } catch let e as GoDuration.ParseError {
            throw ValidationError("--timeout \(timeout): \(e)")
        }
        o.restart = restart
        o.force = force
        return o
    }

    static func besideExecutable(_ executable: String, _ name: String) -> String {
        guard let slash = executable.lastIndex(of: "/") else { return name }
        return String(executable[...slash]) + name
    }

    /// Parses `arguments` (without the program name), runs, and returns the exit status.
    public static func run(arguments: [String], executable: String) async -> Int32 {
        let command: InstallerCommand
        do {
            command = try parseAsRoot(try OriginalFlags.normalize(arguments)) as! InstallerCommand
        } catch {
            let code = exitCode(for: error)
            let text = fullMessage(for: error)
            if code == .success { print(text) } else { printError(text) }
            return code.rawValue
        }
        do {
            return try await command.execute(executable: executable)
        } catch {
            printError("zeropod-installer: \(error)")
            return 1
        }
    }

    /// Runs the checks and the install or uninstall; returns the exit status.
    /// - Throws: `InstallerError` or `ValidationError`.
    public func execute(executable: String) async throws -> Int32 {
        var options = try installerOptions(executable: executable)
        if uninstall {
            _ = try Installer(options: options) { line in print(line) }.uninstall()
            return 0
        }
        // containerd's version, once, for the checks and the install (decision 0038).
        let (release, source) = try await ContainerdVersionLookup.resolve(
            given: options.containerdVersion,
            binary: options.containerdBinary,
            socket: options.effectiveContainerdAddress,
            flavour: options.flavour,
            commands: LocalCommands(),
            timeout: options.timeout
        )
        print("containerd \(release.text) (\(source))")
        options.containerdVersion = release.text
        let installer = Installer(options: options) { line in print(line) }
        var checkOptions = NodeCheckOptions()
        checkOptions.scope = .prerequisites
        checkOptions.criuPath = options.criuSource
        checkOptions.flavour = options.flavour
        checkOptions.containerdBinary = options.containerdBinary
        checkOptions.containerdVersion = options.containerdVersion
        checkOptions.containerdVersionSource = source
        checkOptions.runcPath = runc
        checkOptions.checkRunc = !noRuncCheck
        checkOptions.nodeConfigPath = options.nodeConfigPath
        checkOptions.timeout = options.timeout
        let report = NodeChecks(options: checkOptions).run()
        print(report.rendered(), terminator: "")
        if !report.blockers.isEmpty && !skipChecks {
            printError(
                "zeropod-installer: stopped before changing anything: the node checks found "
                    + "\(report.blockers.count) blocker(s) (--skip-checks installs anyway)"
            )
            return 2
        }
        _ = try installer.install()
        return 0
    }
}

/// The original installer's Go-style flags (`-runtime k3s`, `-host-opt-path=/x`).
public enum OriginalFlags {
    /// Long options this installer has; a single-dash spelling of one becomes the double-dash one.
    public static let known = [
        "runtime", "config", "host-opt-path", "shim-link-dir", "node-config", "shim", "criu", "containerd-version",
        "containerd-binary", "containerd-address", "timeout", "restart", "uninstall", "skip-checks", "force", "runc",
        "no-runc-check", "help",
    ]
    /// The original's flags this installer does not have, and why.
    public static let unsupported = [
        "criu-image": "not supported: CRIU comes with the installer (--criu names the binary to install)",
        "probe-binary-name":
            "not supported: probes are recognised by source address and user agent (docs/configuration.md)",
        "tracker-ignore-localhost":
            "not supported as a flag: set loopback-is-activity in the node settings (docs/configuration.md)",
    ]

    /// Rewrites `-name` and `-name=value` to `--name…` for known names.
    /// - Throws: `ValidationError` for one of the original's flags that this installer does not support.
    public static func normalize(_ arguments: [String]) throws -> [String] {
        var out: [String] = []
        var passThrough = false
        for arg in arguments {
            if passThrough || arg == "--" {
                passThrough = true
                out.append(arg)
                continue
            }
            var name = arg
            if arg.hasPrefix("--") {
                name = String(arg.dropFirst(2))
            } else if arg.hasPrefix("-"), arg.count > 2 {
                name = String(arg.dropFirst())
            } else {
                out.append(arg)
                continue
            }
            let bare = String(name.prefix(while: { $0 != "=" }))
            if let why = unsupported[bare] { throw ValidationError("-\(bare): \(why)") }
            if !arg.hasPrefix("--"), known.contains(bare) { out.append("--" + name) } else { out.append(arg) }
        }
        return out
    }
}

/// Writes a line to standard error.
func printError(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}
