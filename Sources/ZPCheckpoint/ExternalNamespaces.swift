import SystemPackage
import ZPSystem

extension NetworkNamespace {
    /// The CRIU `external` entry that marks the network namespace at `path` as external under
    /// `key`: `net[<inode>]:<key>` (CRIU's `--external net[<inode>]:<key>`; the restore then
    /// inherits a descriptor of the namespace under the same key).
    /// - Parameters:
    ///   - path: the namespace file, e.g. `/var/run/netns/NAME`.
    ///   - key: the name the restore's `inherit_fd` uses.
    /// - Throws: `SystemError` when the file cannot be stat'ed.
    public static func externalEntry(for path: FilePath, key: String = "extRootNetNS") throws(SystemError) -> String {
        "net[\(try NetworkNamespace(path: path).inode())]:\(key)"
    }
}
