// Access to Tests/ZPCoreTests/Fixtures and to protoc, for the golden-vector tests.
import Foundation
import ZPTestSupport

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

    /// Runs `protoc -I<fixtures> arguments...` in the fixtures folder with `input` on stdin;
    /// returns stdout.
    /// - Throws: ``LabError`` with protoc's output, or saying that `make setup` installs it.
    static func protoc(_ arguments: [String], input: [UInt8]) throws -> [UInt8] {
        let result = try run(
            ["protoc", "-I\(directory.path)"] + arguments,
            input: input,
            currentDirectory: directory.path
        )
        if result.status == 127 { throw LabError("protoc not found on PATH: `make setup` installs protobuf-compiler") }
        return try result.checked().output
    }
}
