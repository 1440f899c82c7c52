import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// `start`: find or launch the shim daemon for this container's group and return its address.
///
/// The socket lives at `/run/containerd/s/<sha256(address/namespace/group)>`, owner-only. If a daemon
/// already answers there, its address is returned; otherwise this process binds and listens, starts
/// itself again without an action (socket on fd 3, new session, stdio to `/dev/null`, stderr to the
/// bundle's `log` FIFO when there is one) and returns. The address is also written to the bundle's
/// `address` file, which containerd 1.6 reads when it reconnects after a restart.
public enum StartCommand {
    /// The directory of shim sockets.
    public static let socketDirectory = "/run/containerd/s"

    /// The socket path for a group.
    public static func socketPath(containerdAddress: String, namespace: String, group: String) -> String {
        // Go's filepath.Join(address, namespace, group) for the usual absolute, clean address.
        let key =
            (containerdAddress.hasSuffix("/") ? String(containerdAddress.dropLast()) : containerdAddress)
            + "/\(namespace)/\(group)"
        return "\(socketDirectory)/\(SHA256.hexDigest(key))"
    }

    /// Runs `start`. - Returns: The address to print, `unix:///run/containerd/s/<hash>`.
    /// - Throws: ``SystemError`` when the socket cannot be created or the daemon cannot be started;
    ///   ``RuncOptionsError`` when the `ShimCgroup` runc option names a cgroup the daemon cannot join.
    public static func run(_ options: ShimCommandLine) throws -> String {
        let bundle = options.bundle.isEmpty ? Files.currentDirectory() : options.bundle
        // containerd writes the task's runtime options (an Any) to stdin; only ShimCgroup matters
        // here, the rest (and a refusal of unsupported ones) comes with Create.
        let runtimeOptions =
            readStdinIfPipe().flatMap { bytes in
                (try? ProtobufAny(decoding: bytes)).flatMap { try? RuncOptions(any: $0) }
            } ?? RuncOptions()
        let group = BundleConfig(bundle: bundle).groupID(default: options.id)
        let path = socketPath(containerdAddress: options.address, namespace: options.namespace, group: group)
        let address = "unix://" + path

        if canConnect(path) {
            try? Files.write(FilePath(bundle + "/address"), Array(address.utf8))
            return address
        }
        _ = mkdir("/run/containerd", 0o711)
        _ = mkdir(socketDirectory, 0o711)
        let listener = SharedDescriptor(try listen(at: path))
        var spec = SpawnSpec(
            path: selfExecutable(),
            arguments: [CommandLine.arguments[0]] + options.daemonArguments(socket: path)
        )
        spec.extraDescriptors = [listener]
        spec.workingDirectory = bundle
        spec.newSession = true
        if Files.isFIFO(FilePath(bundle + "/log")),
            let log = try? OwnedDescriptor.open(FilePath(bundle + "/log"), O_RDWR | O_NONBLOCK)
        {
            spec.stderr = SharedDescriptor(log)
        }
        let daemon: pid_t
        do {
            daemon = try Reaper.shared.spawn(spec)
        } catch {
            unlink(path)
            throw error
        }
        if !runtimeOptions.shimCgroup.isEmpty {
            do {
                try ShimCgroup.join(pid: daemon, path: runtimeOptions.shimCgroup)
            } catch {
                kill(daemon, SIGKILL)
                unlink(path)
                throw error
            }
        }
        try? Files.write(FilePath(bundle + "/address"), Array(address.utf8))
        return address
    }

    /// What containerd wrote to stdin (a pipe it closes): the runtime options, if any.
    private static func readStdinIfPipe() -> [UInt8]? {
        guard StandardStream.input.isPipe else { return nil }
        return try? StandardStream.input.readAll()
    }

    private static func selfExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0
            ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Whether a server accepts connections on the unix socket `path`.
    static func canConnect(_ path: String) -> Bool {
        guard let fd = try? socketFD() else { return false }
        var addr = try? unixAddress(path)
        guard addr != nil else { return false }
        return withUnsafePointer(to: &addr!) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    private static func socketFD() throws(SystemError) -> OwnedDescriptor {
        try OwnedDescriptor.socket(domain: AF_UNIX, type: Int32(SOCK_STREAM.rawValue))
    }

    private static func unixAddress(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemError(call: "bind", subject: path, errno: .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return addr
    }

    /// Binds and listens on `path` (removing a stale socket), mode 0600.
    static func listen(at path: String) throws(SystemError) -> OwnedDescriptor {
        unlink(path)
        let fd = try socketFD()
        var addr = try unixAddress(path)
        try systemCall("bind", path) {
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        try systemCall("chmod", path) { chmod(path, 0o600) }
        try systemCall("listen", path) { Glibc.listen(fd.rawValue, 128) }
        return fd
    }
}
