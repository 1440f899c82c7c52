// Helpers shared by the privileged test targets (network namespaces, commands, polling). A library
// target, not a test target, so several test targets can import it; nothing in the product uses it.
import Foundation
import Glibc

/// Whether the process may create namespaces and load BPF programs (root).
public enum Privileges {
    public static let isRoot = getuid() == 0
}

/// A command or lab step that failed; the message names the command and carries its output.
public struct LabError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}

/// Runs a command (via /usr/bin/env) and returns its combined output.
/// - Throws: ``LabError`` naming the command, its exit status and its output when it exits non-zero.
@discardableResult
public func sh(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw LabError(message: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(text)")
    }
    return text
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass (generous deadlines: the machine
/// is a loaded 2-core VM). Never a fixed sleep for correctness.
public func eventually(_ seconds: Double = 30, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// The async variant of ``eventually(_:_:)``: sleeps with `Task.sleep`, so it does not hold a
/// thread of the cooperative pool.
public func eventuallyAsync(_ seconds: Double = 30, _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}
