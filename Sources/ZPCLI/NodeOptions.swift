import ArgumentParser
import SystemPackage
import ZPCore
import ZPSystem

/// The node settings a `zeropod` command works with: the node configuration file (the same one the
/// shims read) and the overrides given on the command line.
public struct NodeOptions: ParsableArguments {
    /// `--node-config PATH`: the node settings file.
    @Option(
        name: .customLong("node-config"),
        help: ArgumentHelp(
            "The node settings file (default: $ZEROPOD_NODE_CONFIG, else \(NodeConfig.defaultPath); a missing default file means the defaults).",
            valueName: "path"
        )
    )
    public var nodeConfigPath: String?

    /// `--run-dir DIR`: overrides the file's `run-dir`.
    @Option(
        name: .customLong("run-dir"),
        help: ArgumentHelp(
            "The node's run directory, where the shims' status sockets are (<run-dir>/s/*.sock); default: the node settings' run-dir.",
            valueName: "dir"
        )
    )
    public var runDirectory: String?

    /// No options given.
    public init() {}

    /// The node settings: the file named by `--node-config`, else by `ZEROPOD_NODE_CONFIG`, else
    /// ``NodeConfig/defaultPath``, with `--run-dir` applied on top. Like the shim, a file that
    /// does not exist and was not named with `--node-config` means the defaults; unlike the shim,
    /// which goes on with the defaults when the file is malformed or unreadable, a command refuses
    /// it, so it never looks at other folders than the shims use without saying so.
    ///
    /// - Parameter environment: The process environment (for `ZEROPOD_NODE_CONFIG`).
    /// - Throws: ``NodeOptionsError`` naming the file or the option and the reason.
    public func nodeConfig(environment: [String: String]) throws(NodeOptionsError) -> NodeConfig {
        let path =
            nodeConfigPath ?? environment["ZEROPOD_NODE_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
            ?? NodeConfig.defaultPath
        var config = NodeConfig()
        let bytes: [UInt8]?
        do {
            bytes = try Files.read(FilePath(path))
        } catch {
            // Only a default file that does not exist means the defaults.
            guard nodeConfigPath == nil, error.errno == .noSuchFileOrDirectory else {
                throw NodeOptionsError(
                    message:
                        "\(nodeConfigPath == nil ? "node settings" : "--node-config") \(path): cannot be read: \(error)"
                )
            }
            bytes = nil
        }
        if let bytes {
            do {
                config = try NodeConfig(parsing: String(decoding: bytes, as: UTF8.self), source: path)
            } catch {
                throw NodeOptionsError(message: "node settings \(error)")
            }
        }
        if let runDirectory {
            // The same rules as the file's `run-dir` (absolute, short enough for socket addresses).
            guard !runDirectory.contains(where: { $0 == "\n" || $0 == "\r" }) else {
                throw NodeOptionsError(message: "--run-dir: the path contains a line break")
            }
            do {
                config.runDirectory = try NodeConfig(parsing: "run-dir = \(runDirectory)", source: "--run-dir")
                    .runDirectory
            } catch {
                var e = error
                e.location = nil
                throw NodeOptionsError(message: "--run-dir: \(e.reasonDescription)")
            }
        }
        return config
    }
}

/// A node settings file or option that a command cannot use.
public struct NodeOptionsError: Error, CustomStringConvertible, Equatable {
    /// What is wrong, naming the file (with its line) or the option.
    public var message: String

    /// An error with `message`.
    public init(message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}
