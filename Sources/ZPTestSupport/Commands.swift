// Commands for tests: run a program with a time limit and capture what it printed.
// ZPTestSupport is a library that only test targets (and test kits) import; nothing in the
// product links it (docs/architecture.md, "Tests, in layers").
import Foundation
import Glibc
import SystemPackage

/// A failed command or test-fixture step; the message names the command or step and carries its
/// output.
public struct LabError: Error, CustomStringConvertible {
    /// What failed and why.
    public var message: String
    /// The message.
    public var description: String { message }
    /// Creates an error with `message`.
    public init(message: String) { self.message = message }
    /// Creates an error with `message`.
    public init(_ message: String) { self.message = message }
}

/// What a command printed and how it ended.
public struct CommandResult: Sendable {
    /// The command line that ran (without the `timeout` wrapper).
    public var arguments: [String]
    /// The exit status (124 when `timeout` stopped it, 127 when the program was not found).
    public var status: Int32
    /// Standard output, as bytes.
    public var output: [UInt8]
    /// Standard error, as text.
    public var stderr: String

    /// Standard output, as text.
    public var stdout: String { String(decoding: output, as: UTF8.self) }

    /// Standard output without surrounding white space.
    public var trimmed: String { stdout.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// Returns `self` when the command exited 0.
    /// - Throws: ``LabError`` naming the command, its status, stderr and stdout otherwise.
    @discardableResult
    public func checked() throws -> CommandResult {
        guard status == 0 else {
            throw LabError("\(arguments.joined(separator: " ")) exited \(status): \(stderr)\(stdout)")
        }
        return self
    }
}

/// Runs `arguments[0]` (looked up on PATH) with a time limit (coreutils `timeout -k 5`),
/// capturing stdout and stderr through files, so that neither pipe can fill up and block it.
/// - Parameters:
///   - timeout: seconds before `timeout` sends SIGTERM (and SIGKILL 5 s later).
///   - environment: the child's whole environment, or nil for this process's.
///   - input: bytes for its standard input (else /dev/null).
///   - currentDirectory: its working directory (else this process's).
/// - Throws: only when the process cannot be started; a non-zero exit is in the result.
@discardableResult
public func run(
    _ arguments: [String],
    timeout: Int = 60,
    environment: [String: String]? = nil,
    input: [UInt8]? = nil,
    currentDirectory: String? = nil
) throws -> CommandResult {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("zptest-\(UUID().uuidString)")
    let outURL = scratch.appendingPathExtension("out")
    let errURL = scratch.appendingPathExtension("err")
    let inURL = scratch.appendingPathExtension("in")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        for url in [outURL, errURL, inURL] { try? FileManager.default.removeItem(at: url) }
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["-k", "5", "\(timeout)"] + arguments
    if let environment { process.environment = environment }
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    if let input {
        try Data(input).write(to: inURL)
        process.standardInput = try FileHandle(forReadingFrom: inURL)
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    let started = Date()
    try process.run()
    process.waitUntilExit()
    if ProcessInfo.processInfo.environment["ZPTEST_TRACE"] != nil {
        let seconds = String(format: "%.2f", Date().timeIntervalSince(started))
        print("[zptest-trace] \(seconds)s \(arguments.prefix(6).joined(separator: " "))")
    }
    return CommandResult(
        arguments: arguments,
        status: process.terminationStatus,
        output: Array((try? Data(contentsOf: outURL)) ?? Data()),
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    )
}

/// Runs a command that must succeed and returns its standard output.
/// - Throws: ``LabError`` naming the command, its exit status and its output when it exits
///   non-zero.
@discardableResult
public func sh(_ arguments: [String], timeout: Int = 60, input: [UInt8]? = nil) throws -> String {
    try run(arguments, timeout: timeout, input: input).checked().stdout
}

/// Runs `command` with `/bin/sh -c` and returns its standard output.
/// - Throws: ``LabError`` with the command and its output when it exits non-zero, unless
///   `allowFailure`.
@discardableResult
public func shell(_ command: String, timeout: Int = 60, allowFailure: Bool = false) throws -> String {
    let result = try run(["/bin/sh", "-c", command], timeout: timeout)
    return allowFailure ? result.stdout : try result.checked().stdout
}

/// ``run(_:timeout:environment:input:)`` on a thread of its own, so that waiting for the child
/// does not hold one of the few threads of Swift's cooperative pool (two on these machines),
/// which in-process NIO servers and clients need.
public func runOffThePool(
    _ arguments: [String],
    timeout: Int = 60,
    environment: [String: String]? = nil,
    input: [UInt8]? = nil
) async throws -> CommandResult {
    try await onThread { try run(arguments, timeout: timeout, environment: environment, input: input) }
}

/// A name for a test's namespace, folder or container: `<prefix>-<6 random base-36 digits>`.
public func uniqueName(_ prefix: String) -> String {
    let digits = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    return "\(prefix)-\(String(repeating: "0", count: max(0, 6 - digits.count)))\(digits.suffix(6))"
}

/// A folder under /tmp for one test, removed (recursively) by ``remove()`` or on deinit.
public final class TemporaryDirectory: Sendable {
    /// Its absolute path.
    public let path: String

    /// ``path`` as a `FilePath`.
    public var filePath: FilePath { FilePath(path) }

    /// Creates `/tmp/<uniqueName(prefix)>`.
    /// - Throws: when the folder cannot be made.
    public init(_ prefix: String) throws {
        path = "/tmp/\(uniqueName(prefix))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Writes `text` to the file `name` in the folder and returns its path.
    /// - Throws: when the file cannot be written.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// Removes the folder and everything in it.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit { remove() }
}
