// What the machine lets a test do. Tests that need more than they have are disabled through a
// Swift Testing condition trait that states why, e.g.
// `@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces"))`.
import Foundation
import Glibc

/// What this process may do and which tools exist, for `.enabled(if:_:)` traits.
public enum Privileges {
    /// Whether the process runs as root (namespaces, BPF, CRIU, runc and containerd need it).
    public static let isRoot = getuid() == 0

    /// Whether an executable named `name` is on PATH (or `name` is an executable path).
    public static func hasTool(_ name: String) -> Bool {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }
}
