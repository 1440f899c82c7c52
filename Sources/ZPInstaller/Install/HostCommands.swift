// Programs the installer and the node checks run (containerd --version, ldd, patchelf, systemctl,
// runc --version), behind a protocol so tests can answer for programs this machine cannot run
// for real (systemctl: no systemd here).
import Foundation
import Synchronization

/// The result of running a program.
public struct CommandResult: Sendable, Equatable {
    /// Exit status (or 128 + signal; -1 when it could not start).
    public var status: Int32
    /// Standard output.
    public var output: String
    /// Standard error.
    public var errors: String

    /// Makes a result.
    public init(status: Int32, output: String, errors: String = "") {
        self.status = status
        self.output = output
        self.errors = errors
    }
}

/// Runs programs on the host.
public protocol HostCommands: Sendable {
    /// Runs `program arguments...` (looked up on PATH when not absolute), waits at most `timeout`
    /// seconds, and returns what it printed. A program that cannot start gives status -1.
    func run(_ program: String, _ arguments: [String], timeout: Double) -> CommandResult
    /// The absolute path of a program on PATH, or nil.
    func which(_ program: String) -> String?
}

/// Runs programs for real with Foundation's `Process`.
public struct LocalCommands: HostCommands {
    /// Creates the runner.
    public init() {}

    /// See `HostCommands.run`.
    public func run(_ program: String, _ arguments: [String], timeout: Double) -> CommandResult {
        guard let path = program.hasPrefix("/") ? program : which(program) else {
            return CommandResult(status: -1, output: "", errors: "\(program): not found on PATH")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return CommandResult(status: -1, output: "", errors: "\(path): \(error)")
        }
        // Read both pipes while the program runs (a full pipe would block it).
        let collected = CollectedOutput()
        let group = DispatchGroup()
        for (handle, isError) in [(out.fileHandleForReading, false), (err.fileHandleForReading, true)] {
            group.enter()
            DispatchQueue.global().async {
                let data = handle.readDataToEndOfFile()
                collected.set(data, isError: isError)
                group.leave()
            }
        }
        let deadline = DispatchTime.now() + timeout
        if group.wait(timeout: deadline) == .timedOut {
            process.terminate()
            _ = group.wait(timeout: .now() + 5)
            process.waitUntilExit()
            let (o, e) = collected.value
            return CommandResult(status: -1, output: o, errors: e + "\n\(path): killed after \(timeout) s")
        }
        process.waitUntilExit()
        let (o, e) = collected.value
        let status =
            process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return CommandResult(status: status, output: o, errors: e)
    }

    /// See `HostCommands.which`.
    public func which(_ program: String) -> String? {
        if program.hasPrefix("/") { return access(program, X_OK) == 0 ? program : nil }
        let path =
            ProcessInfo.processInfo.environment["PATH"]
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// Output gathered by two reader threads.
private final class CollectedOutput: Sendable {
    private let state = Mutex<(String, String)>(("", ""))

    func set(_ data: Data, isError: Bool) {
        let text = String(decoding: data, as: UTF8.self)
        state.withLock { if isError { $0.1 = text } else { $0.0 = text } }
    }

    var value: (String, String) { state.withLock { $0 } }
}
