import NIOPosix
import SystemPackage
import ZPAPI
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A runc invocation that failed.
public struct RuncError: Error, Sendable, CustomStringConvertible {
    /// The runc subcommand and its arguments (without the global flags).
    public var command: [String]
    /// runc's exit status, or nil when it could not be started.
    public var exitCode: UInt32?
    /// runc's explanation: the last error of its JSON log, else its stderr.
    public var message: String

    public var description: String {
        let status = exitCode.map { "exited with \($0)" } ?? "could not start"
        return "runc \(command.joined(separator: " ")) \(status): \(message)"
    }
}

/// Descriptors for a runc invocation's stdio; runc hands them on to the container process.
public struct RuncStdio: Sendable {
    /// 0, 1, 2; nil means `/dev/null`.
    public var stdin: SharedDescriptor?, stdout: SharedDescriptor?, stderr: SharedDescriptor?

    /// Stdio from three descriptors.
    public init(stdin: SharedDescriptor?, stdout: SharedDescriptor?, stderr: SharedDescriptor?) {
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Drives the runc command line for one containerd namespace (the same flags go-runc uses).
///
/// Every invocation goes through ``Reaper/spawn(_:)`` so that the shim's reaper does not take runc's
/// exit status. Global flags: `--root <root> --log <bundle>/log.json --log-format json`, plus
/// `--systemd-cgroup` when containerd's runc options ask for systemd's cgroup driver (decision 0042).
public struct RuncDriver: Sendable {
    /// The runc binary.
    public var binary: String
    /// runc's state directory, `<Root option or /run/containerd/runc>/<namespace>`.
    public var root: String
    /// `--systemd-cgroup` on every call (the `SystemdCgroup` option).
    public var systemdCgroup = false
    /// `runc create --no-pivot` (the `NoPivotRoot` option).
    public var noPivotRoot = false
    /// `runc create --no-new-keyring` (the `NoNewKeyring` option).
    public var noNewKeyring = false
    /// The reaper given at init; nil means ``Reaper/shared``, looked up at the first runc call:
    /// making a driver must not start the process-wide `wait4(-1)` thread (in a test process it
    /// would take the exit statuses of other tests' children).
    private let reaperOverride: Reaper?
    private var reaper: Reaper { reaperOverride ?? .shared }

    /// The state root containerd-shim-runc-v2 uses when the options name none.
    public static let defaultRootParent = "/run/containerd/runc"

    /// - Parameters:
    ///   - namespace: The containerd namespace; picks the state root.
    ///   - binary: The runc binary: an absolute path, or a command name looked up on `PATH` (the
    ///     node setting `runc-path`); by default `runc` found on `PATH`.
    ///   - reaper: The reaper runc calls go through; nil for ``Reaper/shared``.
    public init(namespace: String, binary: String? = nil, reaper: Reaper? = nil) {
        let name = binary ?? "runc"
        self.binary =
            name.contains("/") ? name : RuncDriver.findOnPath(name) ?? (name == "runc" ? "/usr/sbin/runc" : name)
        self.root = "\(Self.defaultRootParent)/\(namespace)"
        self.reaperOverride = reaper
    }

    /// A driver configured by containerd's runc options: `BinaryName` (a path, or a name looked up
    /// on `PATH`; without it the node setting `runc-path`), `Root` (the namespace is appended, as
    /// containerd-shim-runc-v2 does), `SystemdCgroup`, `NoPivotRoot`, `NoNewKeyring`.
    /// - Parameters:
    ///   - binary: overrides both (tests); nil uses the options, then `nodeDefault`.
    ///   - nodeDefault: the node setting `runc-path` (a path or a name on `PATH`).
    /// - Throws: ``RuncOptionsError`` when the binary chosen is no executable.
    public init(
        namespace: String,
        options: RuncOptions,
        binary: String? = nil,
        nodeDefault: String = "runc",
        reaper: Reaper? = nil
    ) throws(RuncOptionsError) {
        var resolved = binary
        if resolved == nil {
            let (name, origin) =
                options.binaryName.isEmpty
                ? (nodeDefault, "runc-path (node setting)") : (options.binaryName, "BinaryName")
            if name.contains("/") {
                guard Files.isExecutableFile(FilePath(name)) else {
                    throw RuncOptionsError("\(origin) \(name) is not an executable file")
                }
                resolved = name
            } else if let found = RuncDriver.findOnPath(name) {
                resolved = found
            } else if name != "runc" {
                throw RuncOptionsError("\(origin) \(name) is not found on PATH")
            }
        }
        self.init(namespace: namespace, binary: resolved, reaper: reaper)
        if !options.root.isEmpty {
            root = (options.root.hasSuffix("/") ? String(options.root.dropLast()) : options.root) + "/" + namespace
        }
        systemdCgroup = options.systemdCgroup
        noPivotRoot = options.noPivotRoot
        noNewKeyring = options.noNewKeyring
    }

    /// The global flags of every invocation (before the subcommand).
    func globalArguments(logFile: String) -> [String] {
        ["--root", root, "--log", logFile, "--log-format", "json"] + (systemdCgroup ? ["--systemd-cgroup"] : [])
    }

    /// `runc create`: sets up the container and its init process, which waits for `start`. With a
    /// `consoleSocket`, runc makes a terminal and sends its master to that socket.
    /// - Parameter stdio: the init's stdio; nil with a console socket (runc's own stdio is then
    ///   `/dev/null`, its stderr captured for errors).
    public func create(
        id: String,
        bundle: String,
        pidFile: String,
        stdio: RuncStdio?,
        consoleSocket: String? = nil
    )
        async throws(RuncError)
    {
        var command = ["create", "--bundle", bundle, "--pid-file", pidFile]
        if noPivotRoot { command.append("--no-pivot") }
        if noNewKeyring { command.append("--no-new-keyring") }
        if let consoleSocket { command += ["--console-socket", consoleSocket] }
        _ = try await run(command + [id], bundle: bundle, stdio: stdio)
    }

    /// `runc start`: lets the created init process run the user's program.
    public func start(id: String, bundle: String) async throws(RuncError) {
        _ = try await run(["start", id], bundle: bundle)
    }

    /// `runc kill [--all] ID SIGNAL`.
    public func kill(id: String, bundle: String, signal: UInt32, all: Bool) async throws(RuncError) {
        _ = try await run(["kill"] + (all ? ["--all"] : []) + [id, "\(signal)"], bundle: bundle)
    }

    /// `runc delete [--force] ID`.
    public func delete(id: String, bundle: String, force: Bool) async throws(RuncError) {
        _ = try await run(["delete"] + (force ? ["--force"] : []) + [id], bundle: bundle)
    }

    /// `runc exec --detach --process FILE --pid-file FILE [--console-socket SOCKET] ID`: starts an
    /// extra process in the container (with a terminal when its process spec asks for one).
    public func exec(
        id: String,
        bundle: String,
        processFile: String,
        pidFile: String,
        stdio: RuncStdio?,
        consoleSocket: String? = nil
    ) async throws(RuncError) {
        var command = ["exec", "--detach", "--process", processFile, "--pid-file", pidFile]
        if let consoleSocket { command += ["--console-socket", consoleSocket] }
        _ = try await run(command + [id], bundle: bundle, stdio: stdio)
    }

    /// `runc ps --format json ID`: the pids in the container's cgroup.
    public func ps(id: String, bundle: String) async throws(RuncError) -> [Int32] {
        let out = try await run(["ps", "--format", "json", id], bundle: bundle, captureOutput: true)
        guard let list = try? JSONDecoder().decode([Int32].self, from: Data(out)) else {
            throw RuncError(
                command: ["ps", id],
                exitCode: 0,
                message: "output is not a JSON list: \(String(decoding: out.prefix(200), as: UTF8.self))"
            )
        }
        return list
    }

    /// `runc update --resources FILE ID`: applies OCI `LinuxResources` JSON.
    public func update(id: String, bundle: String, resourcesFile: String) async throws(RuncError) {
        _ = try await run(["update", "--resources", resourcesFile, id], bundle: bundle)
    }

    /// Runs one runc command and returns its stdout when `captureOutput` is set.
    private func run(
        _ command: [String],
        bundle: String,
        stdio: RuncStdio? = nil,
        captureOutput: Bool = false
    ) async throws(RuncError) -> [UInt8] {
        let logFile = bundle + "/log.json"
        let arguments = [binary] + globalArguments(logFile: logFile) + command
        var spec = SpawnSpec(path: binary, arguments: arguments)
        var outRead: SharedDescriptor?
        var errRead: SharedDescriptor?
        do throws(SystemError) {
            if captureOutput {
                let pipe = try OwnedDescriptor.pipe()
                outRead = SharedDescriptor(pipe.readEnd)
                spec.stdout = SharedDescriptor(pipe.writeEnd)
            }
            if stdio == nil {
                let pipe = try OwnedDescriptor.pipe()
                errRead = SharedDescriptor(pipe.readEnd)
                spec.stderr = SharedDescriptor(pipe.writeEnd)
            }
        } catch {
            throw RuncError(command: command, exitCode: nil, message: "\(error)")
        }
        if let stdio {
            spec.stdin = stdio.stdin
            spec.stdout = stdio.stdout
            spec.stderr = stdio.stderr
        }
        let pid: pid_t
        do {
            pid = try reaper.spawn(spec)
        } catch {
            throw RuncError(command: command, exitCode: nil, message: "\(error)")
        }
        if stdio == nil {
            // Our copies of the write ends: runc has its own now, and the reads below end with it.
            spec.stdout?.close()
            spec.stderr?.close()
        }
        // Blocking reads of small outputs, off the cooperative pool.
        @Sendable func drain(_ end: SharedDescriptor?) -> [UInt8] {
            guard let fd = end?.take() else { return [] }
            return (try? fd.readAll()) ?? []
        }
        let (output, errors): ([UInt8], [UInt8]) =
            (try? await NIOThreadPool.singleton.runIfActive { [outRead, errRead] in
                (drain(outRead), drain(errRead))
            }) ?? ([], [])
        let status = await reaper.wait(for: pid)
        guard status.code == 0 else {
            let logMessage = RuncDriver.lastLogError(logFile)
            let stderrText = String(decoding: errors, as: UTF8.self).trimmedWhitespace
            throw RuncError(
                command: command,
                exitCode: status.code,
                message: logMessage ?? (stderrText.isEmpty ? "no message" : stderrText)
            )
        }
        return output
    }

    /// The `msg` of the last error-level line of runc's JSON log.
    static func lastLogError(_ path: String) -> String? {
        guard let bytes = try? Files.read(FilePath(path)) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").reversed() {
            struct Line: Decodable {
                var level: String?
                var msg: String?
            }
            guard let entry = try? JSONDecoder().decode(Line.self, from: Data(line.utf8)),
                entry.level == "error" || entry.level == "fatal", let msg = entry.msg
            else { continue }
            return msg
        }
        return nil
    }

    /// The first executable `name` in `PATH`.
    static func findOnPath(_ name: String) -> String? {
        let path =
            getenv("PATH").map { String(cString: $0) } ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
