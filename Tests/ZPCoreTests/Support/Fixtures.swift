// Access to Tests/ZPCoreTests/Fixtures and to protoc, for the golden-vector tests.
import Foundation

enum Fixtures {
    /// The folder next to this file's parent, found from the source path so tests run from any
    /// working directory.
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct GoldenCase: Sendable, CustomStringConvertible {
        var name: String
        var proto: String
        var message: String
        var description: String { name }
    }

    /// The cases of golden.list.
    static func goldenList() throws -> [GoldenCase] {
        let text = try String(contentsOf: directory.appendingPathComponent("golden.list"), encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard parts.count == 3, !parts[0].hasPrefix("#") else { return nil }
            return GoldenCase(name: parts[0], proto: parts[1], message: parts[2])
        }
    }

    static func bytes(_ file: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(file)))
    }

    struct ProtocFailed: Error, CustomStringConvertible {
        var arguments: [String]
        var status: Int32
        var stderr: String
        var description: String {
            if status == 127 { return "protoc not found on PATH: `make setup` installs protobuf-compiler" }
            return "protoc \(arguments.joined(separator: " ")) exited \(status): \(stderr)"
        }
    }

    /// Runs `protoc -I<fixtures> arguments...` with `input` on stdin; returns stdout.
    static func protoc(_ arguments: [String], input: [UInt8]) throws -> [UInt8] {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("zpcore-protoc-\(UUID().uuidString)")
        let inputFile = scratch.appendingPathExtension("in"), errorFile = scratch.appendingPathExtension("err")
        try Data(input).write(to: inputFile)
        try Data().write(to: errorFile)
        defer {
            try? FileManager.default.removeItem(at: inputFile)
            try? FileManager.default.removeItem(at: errorFile)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let args = ["-I\(directory.path)"] + arguments
        process.arguments = ["protoc"] + args
        process.currentDirectoryURL = directory
        process.standardInput = try FileHandle(forReadingFrom: inputFile)
        process.standardError = try FileHandle(forWritingTo: errorFile)
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ProtocFailed(arguments: args, status: process.terminationStatus,
                               stderr: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
        }
        return [UInt8](output)
    }
}
