import Foundation
import Testing
import ZPTestSupport

/// `protoc --encode` on the `.proto` files in Fixtures/, for golden bytes. Suites that need it are
/// enabled only when protoc is installed (Debian's protobuf-compiler; `make setup` installs it).
enum Protoc {
    /// The protoc binary: the first `protoc` on `PATH`, else nil.
    static let path: String? = {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return directories.map { "\($0)/protoc" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Whether golden-byte tests can run.
    static var isInstalled: Bool { path != nil }

    /// Why golden-byte suites are skipped when protoc is missing.
    static let missingReason: Comment =
        "protoc is not installed (Debian package protobuf-compiler; `make setup` installs it)"

    /// The folder with the .proto fixtures.
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        .path

    /// `protoc --encode=<message> -I Fixtures <proto>` with `text` on stdin.
    /// - Throws: ``ProtocError`` when protoc is missing or exits non-zero (its stderr included).
    static func encode(_ message: String, in proto: String, _ text: String) throws -> [UInt8] {
        guard let path else { throw ProtocError(message: "protoc is not installed") }
        let result = try run(["\(path)", "--encode=\(message)", "-I", fixtures, proto], input: Array(text.utf8))
        guard result.status == 0 else {
            throw ProtocError(message: "protoc --encode=\(message) exited \(result.status): \(result.stderr)")
        }
        return result.output
    }
}

/// protoc could not make the golden bytes.
struct ProtocError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Golden bytes for the status API: `zeropod.shim.v1.<message>` of Fixtures/shim_status.proto.
func protocStatus(_ message: String, _ text: String) throws -> [UInt8] {
    try Protoc.encode("zeropod.shim.v1.\(message)", in: "shim_status.proto", text)
}

/// Golden bytes for containerd's task API and events: `zpshimtest.<message>` of Fixtures/shim_subset.proto.
func protocEncode(_ message: String, _ text: String) throws -> [UInt8] {
    try Protoc.encode("zpshimtest.\(message)", in: "shim_subset.proto", text)
}
