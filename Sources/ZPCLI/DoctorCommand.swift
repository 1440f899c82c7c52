import ArgumentParser
import ZPCore
import ZPInstaller
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `zeropod doctor`: what this node has and lacks for zeropod-swift — kernel (BTF, sk_lookup, tcx,
/// sockops, bpffs, cgroup version, userfaultfd, soft-dirty), CRIU (version, `criu check`, the
/// rlimit patch), runc, containerd (version, the `zeropod` handler, forwarded annotations), the
/// node settings and the state and run folders: one table with OK / missing / blocker and, for each
/// problem, the fix (ZPInstaller's `NodeChecks`, decision 0024). Exit status 0 without blockers,
/// 1 with, 64 for bad options.
///
/// containerd's version comes from its Version service over the socket (`--containerd-address`),
/// unless `--containerd-version` or `--containerd-binary` says otherwise (decision 0038). Every path
/// is an option, so a feature can be looked for elsewhere (or taken away in a test).
public struct DoctorCommand: AsyncParsableCommand {
    /// The command's name and help.
    public static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check what this node has and lacks for zeropod-swift.",
        discussion: """
            Runs as root (the eBPF probes load programs in a throw-away network namespace; CRIU's check \
            needs root). Prints one row per check: OK, missing (zeropod works, with less), blocker (it cannot \
            work) or not checked, then how to fix each problem. Exit status: 0 without blockers, 1 with.
            """
    )

    /// `--node-config`, `--run-dir`.
    @OptionGroup public var node: NodeOptions

    /// `--runtime`.
    @Option(name: .customLong("runtime"), help: "How containerd runs here: containerd, k3s or rke2.")
    public var flavour: ContainerdFlavour = .containerd

    /// `--config`.
    @Option(
        name: .customLong("config"),
        help: ArgumentHelp(
            "containerd's config (k3s/rke2: the rendered config.toml); default by --runtime.",
            valueName: "path"
        )
    )
    public var containerdConfig: String?

    /// `--containerd-address`.
    @Option(
        name: .customLong("containerd-address"),
        help: ArgumentHelp("containerd's socket, asked for its version; default by --runtime.", valueName: "path")
    )
    public var containerdAddress: String?

    /// `--containerd-version`.
    @Option(name: .customLong("containerd-version"), help: "containerd's version, instead of asking it.")
    public var containerdVersion: String?

    /// `--containerd-binary`.
    @Option(
        name: .customLong("containerd-binary"),
        help: ArgumentHelp("Ask this containerd binary (`--version`) instead of the socket.", valueName: "path")
    )
    public var containerdBinary: String?

    /// `--criu`.
    @Option(
        name: .customLong("criu"),
        help: ArgumentHelp("The CRIU binary; default: the node settings' criu-path.", valueName: "path")
    )
    public var criu: String?

    /// `--runc`.
    @Option(
        name: .customLong("runc"),
        help: ArgumentHelp("The runc binary; default: the node settings' runc-path.", valueName: "path")
    )
    public var runc: String?

    /// `--bpffs`.
    @Option(name: .customLong("bpffs"), help: ArgumentHelp("Where bpffs should be mounted.", valueName: "path"))
    public var bpffs = "/sys/fs/bpf"

    /// `--btf`.
    @Option(name: .customLong("btf"), help: ArgumentHelp("The kernel's BTF.", valueName: "path"))
    public var btf = "/sys/kernel/btf/vmlinux"

    /// `--state-dir`.
    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp("The state folder; default: the node settings' state-dir.", valueName: "dir")
    )
    public var stateDirectory: String?

    /// `--handler`.
    @Option(name: .customLong("handler"), help: "The runtime handler name pods use (RuntimeClass handler).")
    public var handler = "zeropod"

    /// `--no-bpf-probes`.
    @Flag(
        name: .customLong("no-bpf-probes"),
        help: "Do not load eBPF programs; only look whether bpffs is mounted."
    )
    public var noBPFProbes = false

    /// `--timeout`.
    @Option(name: .customLong("timeout"), help: "Time limit for each program the checks run (Go duration).")
    public var timeout = "1m"

    /// No options given.
    public init() {}

    /// Refuses options that could not take effect.
    /// - Throws: `ValidationError` naming the option.
    public func validate() throws {
        for (name, value) in [
            ("--containerd-address", containerdAddress), ("--config", containerdConfig),
            ("--bpffs", Optional(bpffs)), ("--btf", Optional(btf)),
        ] {
            if let value, !value.hasPrefix("/") { throw ValidationError("\(name) \(value): must be an absolute path") }
        }
        if containerdVersion != nil && containerdBinary != nil {
            throw ValidationError("--containerd-version and --containerd-binary cannot be combined")
        }
        if handler.isEmpty { throw ValidationError("--handler: the name is empty") }
        _ = try seconds()
    }

    private func seconds() throws -> Double {
        do {
            let ns = try GoDuration.nanoseconds(timeout)
            guard ns > 0 else { throw ValidationError("--timeout \(timeout): must be positive") }
            return Double(ns) / 1e9
        } catch let e as GoDuration.ParseError {
            throw ValidationError("--timeout \(timeout): \(e)")
        }
    }

    /// Runs the checks on stdout.
    /// - Throws: `ExitCode` 1 when there are blockers.
    public func run() async throws {
        let status = await execute(output: .standard, environment: ProcessInfo.processInfo.environment)
        if status != 0 { throw ExitCode(status) }
    }

    /// The options `NodeChecks` gets from these flags (containerd's version not looked up yet).
    /// - Parameter environment: for `ZEROPOD_NODE_CONFIG`.
    public func checkOptions(environment: [String: String]) -> NodeCheckOptions {
        var o = NodeCheckOptions()
        o.scope = .all
        o.flavour = flavour
        o.containerdConfig = containerdConfig
        o.containerdBinary = containerdBinary
        o.containerdVersion = containerdVersion
        o.criuPath = criu
        o.runcPath = runc
        o.bpffsPath = bpffs
        o.btfPath = btf
        o.handlerName = handler
        o.probeBPF = !noBPFProbes
        o.nodeConfigPath =
            node.nodeConfigPath
            ?? environment["ZEROPOD_NODE_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? NodeConfig.defaultPath
        o.runDirectory = node.runDirectory
        o.stateDirectory = stateDirectory
        o.timeout = (try? seconds()) ?? 60
        return o
    }

    /// The command's work, apart from the process, so tests can run it.
    /// - Returns: the exit status: 0 without blockers, 1 with.
    public func execute(output: CommandOutput, environment: [String: String]) async -> Int32 {
        var options = checkOptions(environment: environment)
        do {
            let (release, source) = try await ContainerdVersionLookup.resolve(
                given: containerdVersion,
                binary: containerdBinary,
                socket: containerdAddress ?? flavour.defaultSocket,
                flavour: flavour,
                commands: LocalCommands(),
                timeout: options.timeout
            )
            options.containerdVersion = release.text
            options.containerdVersionSource = source
        } catch {
            options.containerdVersionFailure = "\(error)"
        }
        let checks = NodeChecks(options: options)
        // The checks block (CRIU, runc, BPF probes): on a thread of their own, not the cooperative pool.
        let report = await withCheckedContinuation { (continuation: CheckedContinuation<NodeCheckReport, Never>) in
            Threads.startDetached { continuation.resume(returning: checks.run()) }
        }
        output.text(report.rendered())
        return report.exitStatus
    }
}
