import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// `delete -bundle DIR`: containerd lost the shim (killed, or gone after a restart); remove the
/// container with `runc delete --force`, unmount its rootfs and report a SIGKILL exit.
public enum DeleteCommand {
    /// Runs `delete`. - Returns: The encoded `DeleteResponse` to write to stdout.
    public static func run(_ options: ShimCommandLine) async -> [UInt8] {
        let bundle = options.bundle.isEmpty ? Sys.currentDirectory() : options.bundle
        let runc = RuncDriver(namespace: options.namespace)
        var pid: UInt32 = 0
        if let bytes = Sys.readFile(bundle + "/init.pid"),
           let value = UInt32(String(decoding: bytes, as: UTF8.self).trimmedWhitespace) {
            pid = value
        }
        try? await runc.delete(id: options.id, bundle: bundle, force: true)
        try? Sys.unmount(bundle + "/rootfs")
        return DeleteResponse(pid: pid, exitStatus: 128 + UInt32(SIGKILL), exitedAt: ProtobufTimestamp(unixNanoseconds: Sys.now())).encoded()
    }
}
