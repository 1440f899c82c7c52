import Logging
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// `delete -bundle DIR`: containerd lost the shim (killed, or gone after a restart); remove the
/// container with `runc delete --force`, unmount its rootfs, remove the dead shim's socket and report
/// a SIGKILL exit. Also removes the container's wake group entry.
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
        // The lost shim's socket: removed when nothing answers on it any more (a group's shim that
        // still serves other containers keeps it).
        if let bytes = Sys.readFile(bundle + "/address") {
            let address = String(decoding: bytes, as: UTF8.self).trimmedWhitespace
            let path = address.hasPrefix("unix://") ? String(address.dropFirst("unix://".count)) : address
            if path.hasPrefix(StartCommand.socketDirectory + "/") && !StartCommand.canConnect(path) {
                unlink(path)
                let status = ShimStatusService.socketPath(forShimSocket: path)  // its status socket (0008)
                if !StartCommand.canConnect(status) { unlink(status) }
            }
        }
        // Its wake group entry (0011): a lost shim could not remove it on Delete.
        let node = TaskService.loadNodeConfig(logger: Logger(label: "delete") { _ in SwiftLogNoOpLogHandler() })
        WakeGroupRegistry(runDirectory: node.runDirectory)
            .unlistLostMember(containerID: options.id, containerdNamespace: options.namespace,
                              annotations: BundleConfig(bundle: bundle).annotations)
        return DeleteResponse(pid: pid, exitStatus: 128 + UInt32(SIGKILL), exitedAt: ProtobufTimestamp(unixNanoseconds: Sys.now())).encoded()
    }
}
