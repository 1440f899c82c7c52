import SystemPackage
import ZPCore
import ZPScaleDown
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Finds the TCP ports a container listens on when `ports-map` names none: the LISTEN sockets of
/// the container's network namespace, kept only when their inode is held by one of the
/// container's processes (the init and its descendants), so that sockets of other containers in
/// the pod are not taken.
///
/// Listeners come from a socket diagnostics dump that asks for listeners only (``listeners(inNamespaceOf:)``):
/// printing `/proc/<pid>/net/tcp` and `tcp6` walks the whole established hash, ~3 ms for the
/// two on a 24 GiB node whatever the namespace holds, and the post-restore hook (on the restore's
/// path) and every scale-down's port check asked for them. Connections and handshakes in progress
/// still come from the tables (a dump for them walks the same hash).
enum PortDiscovery {
    /// The listening ports of the process tree rooted at `pid`, sorted; empty when none (yet).
    static func listeningPorts(ofTreeAt pid: Int32) -> [UInt16] {
        let inodes = socketInodes(of: processTree(root: pid))
        guard !inodes.isEmpty else { return [] }
        return Set(listeners(inNamespaceOf: pid).filter { inodes.contains($0.1) }.map(\.0)).sorted()
    }

    /// (port, inode) of every listening TCP socket (IPv4 and IPv6) in the network namespace of
    /// `pid`: from a socket diagnostics dump of listeners only, or, where that fails (no
    /// `inet_diag` in the kernel), from `/proc/<pid>/net/tcp` and `tcp6`.
    static func listeners(inNamespaceOf pid: Int32) -> [(UInt16, UInt64)] {
        let namespace = NetworkNamespace(path: FilePath("/proc/\(pid)/ns/net"))
        return (try? dumpedListeners(in: namespace)) ?? tableListeners(at: "/proc/\(pid)/net")
    }

    /// (port, inode) of the LISTEN rows of the `tcp` and `tcp6` tables in the folder `net`
    /// (`/proc/<pid>/net`); unreadable tables count as empty.
    static func tableListeners(at net: String) -> [(UInt16, UInt64)] {
        var result: [(UInt16, UInt64)] = []
        for file in ["tcp", "tcp6"] {
            guard let bytes = try? Files.read(FilePath("\(net)/\(file)")) else { continue }
            result += listeningSockets(inTable: String(decoding: bytes, as: UTF8.self))
        }
        return result
    }

    /// (port, inode) of the listening TCP sockets in `namespace`, from a socket diagnostics
    /// dump of listeners only (IPv4, then IPv6).
    /// - Throws: ZPSystem's `SystemError` when the namespace cannot be joined, the socket made or
    ///   the dump read, or the kernel refused it (its errno, naming `SOCK_DIAG_BY_FAMILY`).
    static func dumpedListeners(in namespace: NetworkNamespace) throws(SystemError) -> [(UInt16, UInt64)] {
        let socket = try Netlink.socket(protocol: Netlink.socketDiagnostics, in: namespace)
        var result: [(UInt16, UInt64)] = []
        for (sequence, ipv6) in [(UInt32(1), false), (UInt32(2), true)] {
            var failure: Int32?
            _ = try Netlink.exchange(
                InetDiag.dumpRequest(ipv6: ipv6, states: [.listen], sequence: sequence),
                on: socket
            ) { datagram in
                let reply = InetDiag.decode(datagram, sequence: sequence)
                result += reply.rows.filter { $0.state == .listen && $0.inode != 0 }.map { ($0.localPort, $0.inode) }
                failure = reply.errno
                return reply.finished
            }
            if let failure {
                throw SystemError(
                    call: "SOCK_DIAG_BY_FAMILY",
                    subject: "listeners (\(ipv6 ? "IPv6" : "IPv4")) in \(namespace)",
                    errno: Errno(rawValue: failure)
                )
            }
        }
        return result
    }

    /// Those of `ports` with a LISTEN socket in the namespace of `pid` that no process of the tree
    /// rooted at `pid` holds (another container of the pod serves them), sorted.
    static func portsServedByOthers(_ ports: [UInt16], treeAt pid: Int32) -> [UInt16] {
        let wanted = Set(ports)
        guard !wanted.isEmpty else { return [] }
        let listening = listeners(inNamespaceOf: pid).filter { wanted.contains($0.0) }
        guard !listening.isEmpty else { return [] }
        let ours = socketInodes(of: processTree(root: pid))
        return Set(listening.filter { !ours.contains($0.1) }.map(\.0)).sorted()
    }

    /// The connections not yet accepted by the listeners on `ports` in the namespace of `pid`
    /// (``ProcNetTCP/pendingConnections(_:ports:)``: accept queues and incomplete handshakes) and
    /// the namespace's listener pressure counter (``ProcNetStat/listenerPressure(_:)``).
    static func pendingConnections(on ports: [UInt16], treeAt pid: Int32) -> PendingConnections {
        var rows: [ProcNetTCP.Row] = []
        for (file, ipv6) in [("tcp", false), ("tcp6", true)] {
            guard let bytes = try? Files.read(FilePath("/proc/\(pid)/net/\(file)")) else { continue }
            rows += ProcNetTCP.parse(String(decoding: bytes, as: UTF8.self), ipv6: ipv6)
        }
        let netstat = try? Files.read(FilePath("/proc/\(pid)/net/netstat"))
        return PendingConnections(
            queued: ProcNetTCP.pendingConnections(rows, ports: Set(ports)),
            listenerPressure: netstat.flatMap { ProcNetStat.listenerPressure(String(decoding: $0, as: UTF8.self)) }
        )
    }

    /// The TCP connections of the process tree rooted at `pid` (established, or closing but not
    /// yet closed: what CRIU's `tcp_established` dumps), container side first: each socket
    /// descriptor of the tree, copied (`pidfd_getfd`) and asked for its state and addresses. The
    /// namespace's tables would say the same but cost ~3 ms to print (the whole established
    /// hash), and this runs in CRIU's `pre-dump` hook, on the checkpoint's path. A process that
    /// exits meanwhile, or a descriptor it closes, is skipped.
    static func connections(ofTreeAt pid: Int32) -> [TCPConnectionTuple] {
        var seen: Set<UInt64> = []
        var result: [TCPConnectionTuple] = []
        for process in processTree(root: pid) {
            let sockets = socketDescriptors(of: process).filter { seen.insert($0.inode).inserted }
            guard !sockets.isEmpty, let pidfd = try? ListeningSockets.processDescriptor(process) else { continue }
            for socket in sockets {
                guard let copy = try? ListeningSockets.copy(descriptor: socket.descriptor, of: pidfd),
                    let endpoints = try? ListeningSockets.tcpEndpoints(of: copy),
                    ProcNetTCP.State(rawValue: endpoints.state)?.isConnection == true,
                    let local = IPAddress(bytes: endpoints.local),
                    let remote = IPAddress(bytes: endpoints.remote)
                else { continue }
                result.append(
                    TCPConnectionTuple(
                        local: local,
                        localPort: endpoints.localPort,
                        remote: remote,
                        remotePort: endpoints.remotePort
                    )
                )
            }
        }
        return result
    }

    /// The listening sockets on `ports` that the process tree rooted at `pid` holds: for each
    /// socket, the first process of the tree holding it and the descriptor number there (from
    /// the listeners of its network namespace and `/proc/<pid>/fd`).
    static func listenerDescriptors(
        on ports: Set<UInt16>,
        treeAt pid: Int32
    ) -> [ContainerConnections.ApplicationListener] {
        var portOfInode: [UInt64: UInt16] = [:]
        for (port, inode) in listeners(inNamespaceOf: pid) where ports.contains(port) {
            portOfInode[inode] = port
        }
        guard !portOfInode.isEmpty else { return [] }
        var found: [ContainerConnections.ApplicationListener] = []
        for process in processTree(root: pid) where !portOfInode.isEmpty {
            for socket in socketDescriptors(of: process) {
                guard let port = portOfInode.removeValue(forKey: socket.inode) else { continue }
                found.append(.init(port: port, pid: process, descriptor: socket.descriptor, inode: socket.inode))
            }
        }
        return found
    }

    /// (port, inode) of every LISTEN (state 0A) row of a `/proc/net/tcp{,6}` table.
    static func listeningSockets(inTable text: String) -> [(UInt16, UInt64)] {
        var result: [(UInt16, UInt64)] = []
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 9, fields[3] == "0A",
                let colon = fields[1].lastIndex(of: ":"),
                let port = UInt16(fields[1][fields[1].index(after: colon)...], radix: 16),
                let inode = UInt64(fields[9]), inode != 0
            else { continue }
            result.append((port, inode))
        }
        return result
    }

    /// `root` and its descendants, from `/proc/<pid>/task/<tid>/children`.
    static func processTree(root: Int32) -> [Int32] {
        var seen: [Int32] = []
        var pending = [root]
        while let pid = pending.popLast(), seen.count < 4096 {
            guard !seen.contains(pid) else { continue }
            seen.append(pid)
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            for tid in tasks {
                guard let bytes = try? Files.read(FilePath("/proc/\(pid)/task/\(tid)/children")) else { continue }
                pending += String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int32($0) }
            }
        }
        return seen
    }

    /// The socket inodes the processes hold (`socket:[N]` links in `/proc/<pid>/fd`).
    static func socketInodes(of processes: [Int32]) -> Set<UInt64> {
        Set(processes.flatMap { socketDescriptors(of: $0).map(\.inode) })
    }

    /// The socket descriptors of `process` and their inodes (`socket:[N]` links in
    /// `/proc/<pid>/fd`); empty when it is gone.
    static func socketDescriptors(of process: Int32) -> [(descriptor: Int32, inode: UInt64)] {
        let dir = "/proc/\(process)/fd"
        var found: [(descriptor: Int32, inode: UInt64)] = []
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let number = Int32(fd),
                let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + fd),
                target.hasPrefix("socket:["), target.hasSuffix("]"),
                let inode = UInt64(target.dropFirst(8).dropLast())
            else { continue }
            found.append((number, inode))
        }
        return found
    }
}
