// How the installer and `zeropod doctor` learn containerd's version: given on the command line,
// asked of containerd's Version service over its gRPC socket (what a pod can do with the socket
// mounted), or, failing that, `containerd --version` of a binary (decision 0038).
import ZPCore
import ZPGRPC

/// containerd's `containerd.services.version.v1.Version` service, asked over its gRPC socket.
///
/// The service (containerd's `api/services/version/v1/version.proto`) takes a
/// `google.protobuf.Empty` and answers `VersionResponse { string version = 1; string revision = 2; }`;
/// both 1.6 and 2.x serve it on the main socket without a namespace.
public enum ContainerdVersionService {
    /// The gRPC method path.
    public static let method = "/containerd.services.version.v1.Version/Version"

    /// What containerd answers.
    public struct Answer: Sendable, Equatable {
        /// e.g. `1.6.20~ds1` or `v2.1.9`.
        public var version: String
        /// The commit containerd was built from (may be empty).
        public var revision: String

        /// An answer.
        public init(version: String, revision: String) {
            self.version = version
            self.revision = revision
        }
    }

    /// Decodes a `VersionResponse` (unknown fields skipped).
    /// - Throws: `ProtobufError` for malformed bytes.
    public static func decode(_ bytes: [UInt8]) throws(ProtobufError) -> Answer {
        var answer = Answer(version: "", revision: "")
        var reader = ProtobufReader(bytes)
        while let field = try reader.nextField() {
            switch field.number {
            case 1: answer.version = try field.string(in: "VersionResponse")
            case 2: answer.revision = try field.string(in: "VersionResponse")
            default: continue
            }
        }
        return answer
    }

    /// Asks the containerd listening on `socket` for its version.
    /// - Parameters:
    ///   - socket: containerd's gRPC socket, e.g. `/run/containerd/containerd.sock`.
    ///   - timeout: for the connect and the call together.
    /// - Throws: `InstallerError` naming the socket and what failed (no socket, no answer, a gRPC
    ///   error status, a malformed answer).
    public static func ask(socket: String, timeout: Duration = .seconds(10)) async throws(InstallerError) -> Answer {
        let client: GRPCUnaryClient
        do {
            client = try await GRPCUnaryClient.connect(
                unixSocket: socket,
                userAgent: "zeropod-swift-installer",
                connectTimeout: timeout
            )
        } catch {
            throw InstallerError("cannot connect to containerd's socket (\(error))", file: socket)
        }
        do {
            let bytes = try await client.call(method, [], timeout: timeout)
            await client.close()
            let answer = try decode(bytes)
            guard !answer.version.isEmpty else {
                throw InstallerError("containerd's Version service answered without a version", file: socket)
            }
            return answer
        } catch let error as InstallerError {
            throw error
        } catch {
            await client.close()
            throw InstallerError("containerd's Version service: \(error)", file: socket)
        }
    }
}

/// Where containerd's version came from, for the log and the doctor's row.
public enum ContainerdVersionSource: Sendable, Equatable, CustomStringConvertible {
    /// `--containerd-version`.
    case given
    /// The Version service on this socket.
    case socket(String)
    /// `BINARY --version`.
    case binary(String)

    /// "given with --containerd-version", "asked over SOCKET", "from BINARY --version".
    public var description: String {
        switch self {
        case .given: return "given with --containerd-version"
        case .socket(let path): return "asked over \(path)"
        case .binary(let path): return "from \(path) --version"
        }
    }
}

/// Finds containerd's release the way decision 0038 says: the version given; else the binary
/// named explicitly; else the Version service on the socket; else the flavour's default binary.
public enum ContainerdVersionLookup {
    /// The release and where it came from.
    /// - Parameters:
    ///   - given: `--containerd-version`, if any.
    ///   - binary: `--containerd-binary`, if given explicitly (then the socket is not asked).
    ///   - socket: containerd's gRPC socket.
    ///   - flavour: for the default binary when the socket does not answer.
    ///   - commands: runs `containerd --version`.
    ///   - timeout: seconds for the socket call and the binary.
    /// - Throws: `InstallerError` naming what was tried and why each failed.
    public static func resolve(
        given: String?,
        binary: String?,
        socket: String,
        flavour: ContainerdFlavour,
        commands: any HostCommands,
        timeout: Double
    ) async throws(InstallerError) -> (ContainerdRelease, ContainerdVersionSource) {
        if let given {
            guard let release = ContainerdRelease(versionText: given) else {
                throw InstallerError("--containerd-version \(given): not a version like 1.7.22 or 2.1.9")
            }
            return (release, .given)
        }
        if let binary { return (try ask(binary: binary, commands: commands, timeout: timeout), .binary(binary)) }
        let socketError: InstallerError
        do throws(InstallerError) {
            let answer = try await ContainerdVersionService.ask(
                socket: socket,
                timeout: .milliseconds(Int(timeout * 1000))
            )
            guard let release = ContainerdRelease(versionText: answer.version) else {
                throw InstallerError(
                    "containerd answered version \"\(answer.version)\", which is not a version",
                    file: socket
                )
            }
            return (release, .socket(socket))
        } catch {
            socketError = error
        }
        // No answer on the socket (containerd stopped, or the socket not mounted): the binary, if there is one.
        let fallback = flavour.defaultBinary
        guard commands.which(fallback) != nil else {
            throw InstallerError(
                "cannot learn containerd's version: \(socketError); and no \(fallback) binary here. "
                    + "Mount containerd's socket (--containerd-address) or give --containerd-version"
            )
        }
        do {
            return (try ask(binary: fallback, commands: commands, timeout: timeout), .binary(fallback))
        } catch {
            throw InstallerError("cannot learn containerd's version: \(socketError); and \(error)")
        }
    }

    /// `binary --version`, parsed.
    /// - Throws: `InstallerError` when it does not run or prints no version.
    public static func ask(
        binary: String,
        commands: any HostCommands,
        timeout: Double
    ) throws(InstallerError) -> ContainerdRelease {
        let r = commands.run(binary, ["--version"], timeout: timeout)
        guard r.status == 0 else {
            throw InstallerError(
                "cannot ask containerd for its version (\(binary) --version: "
                    + "\(r.errors.trimmedLine.isEmpty ? "status \(r.status)" : r.errors.trimmedLine)); "
                    + "give it with --containerd-version"
            )
        }
        return try ContainerdRelease(versionOutput: r.output)
    }
}
