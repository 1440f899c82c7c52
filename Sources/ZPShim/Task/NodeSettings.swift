import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The node settings a shim runs with, read once when it starts, and why the file was refused if
/// it was.
///
/// Policy (decision 0032): a node settings file that cannot be read or parsed is never replaced by
/// the defaults silently. The shim still starts (containerd must be able to talk to it, delete
/// and shut it down), but every `Create` fails with ``problem``, which names the file, the line and
/// the reason, until the file is fixed; the next shim reads it again. Only a missing file means
/// the defaults.
public struct NodeSettings: Sendable {
    /// The environment variable that names the file (else ``NodeConfig/defaultPath``).
    public static let environmentVariable = "ZEROPOD_NODE_CONFIG"

    /// The file that was read (or looked for).
    public var path: String
    /// The settings: the file's, or the defaults when it is missing or refused.
    public var config: NodeConfig
    /// Why the file was refused (`<file>:<line>: <key>: <reason>`, or why it could not be read);
    /// nil when the settings are the file's or the file is missing.
    public var problem: String?

    /// Settings that are known to be good (tests, embedders).
    public init(config: NodeConfig, path: String = NodeConfig.defaultPath) {
        self.path = path
        self.config = config
        self.problem = nil
    }

    /// Reads the file at `path`, else the one named by `ZEROPOD_NODE_CONFIG`, else
    /// `/etc/zeropod/node.conf`.
    /// - Parameter path: the file to read; nil picks it as above.
    /// - Returns: the settings; ``problem`` is set when the file exists but cannot be read or parsed.
    public static func load(path: String? = nil) -> NodeSettings {
        let file = path ?? getenv(environmentVariable).map { String(cString: $0) } ?? NodeConfig.defaultPath
        var settings = NodeSettings(config: NodeConfig(), path: file)
        let bytes: [UInt8]
        do {
            bytes = try Files.read(FilePath(file))
        } catch  where error.errno == .noSuchFileOrDirectory {
            return settings
        } catch {
            settings.problem = "\(file): cannot be read: \(error)"
            return settings
        }
        guard let text = String(validatingUTF8Bytes: bytes) else {
            settings.problem = "\(file): not UTF-8 text"
            return settings
        }
        do {
            settings.config = try NodeConfig(parsing: text, source: file)
        } catch {
            settings.problem = "\(error)"
        }
        return settings
    }
}

extension String {
    /// `bytes` as a string when they are valid UTF-8 without NUL bytes; nil otherwise.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        guard !bytes.contains(0) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        guard Array(text.utf8) == bytes else { return nil }
        self = text
    }
}
