// TCP sockets of a container as values: the connections a checkpoint keeps (decision 0045) and the
// listening sockets a handover listener stands in for (decision 0046), plus the parser of the
// kernel's `/proc/<pid>/net/tcp` and `tcp6` tables. Standard library only.

/// One TCP connection as the pod-side socket sees it: `local` is the container's end.
///
/// Addresses of IPv4 connections on dual-stack IPv6 sockets are kept as the kernel shows them
/// (IPv4-mapped IPv6); ZPBPF stores every address IPv4-mapped, so both forms match.
public struct TCPConnectionTuple: Hashable, Sendable, CustomStringConvertible {
    /// The container's address.
    public var local: IPAddress
    /// The container's port.
    public var localPort: UInt16
    /// The peer's address.
    public var remote: IPAddress
    /// The peer's port.
    public var remotePort: UInt16

    /// A connection.
    /// - Parameters:
    ///   - local: the container's address.
    ///   - localPort: the container's port.
    ///   - remote: the peer's address.
    ///   - remotePort: the peer's port.
    public init(local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16) {
        self.local = local
        self.localPort = localPort
        self.remote = remote
        self.remotePort = remotePort
    }

    /// `10.0.0.5:42340 -> 10.0.0.9:3306` (IPv6 addresses in brackets).
    public var description: String {
        "\(Self.endpoint(local, localPort)) -> \(Self.endpoint(remote, remotePort))"
    }

    static func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }
}

/// A listening TCP socket of the application, as a handover listener must copy it to join its
/// `SO_REUSEPORT` group: same family, bound address, port and `IPV6_V6ONLY`.
public struct TCPListenerAddress: Hashable, Sendable, CustomStringConvertible {
    /// The bound address: `.v4` for an `AF_INET` socket, `.v6` for an `AF_INET6` one (`::` for any).
    public var address: IPAddress
    /// The port.
    public var port: UInt16
    /// `IPV6_V6ONLY` of an `AF_INET6` socket (false for `AF_INET`).
    public var v6Only: Bool
    /// The listen backlog, when known (CRIU's images record it; `/proc` does not).
    public var backlog: Int32?

    /// A listening socket.
    /// - Parameters:
    ///   - address: the bound address; its case gives the family.
    ///   - port: the port.
    ///   - v6Only: `IPV6_V6ONLY` (only meaningful for IPv6).
    ///   - backlog: the listen backlog, if known.
    public init(address: IPAddress, port: UInt16, v6Only: Bool = false, backlog: Int32? = nil) {
        self.address = address
        self.port = port
        self.v6Only = v6Only
        self.backlog = backlog
    }

    /// Whether the socket is `AF_INET6`.
    public var isIPv6: Bool {
        if case .v6 = address { return true }
        return false
    }

    /// `0.0.0.0:8080`, `[::]:8080 (v6only)`.
    public var description: String {
        TCPConnectionTuple.endpoint(address, port) + (v6Only ? " (v6only)" : "")
    }
}

/// The kernel's TCP socket tables, `/proc/<pid>/net/tcp` and `/proc/<pid>/net/tcp6` (the tables of
/// the network namespace of `<pid>`), as rows.
/// `/proc/<pid>/net/netstat`: the network namespace's extended TCP counters.
public enum ProcNetStat {
    /// `ListenDrops + SyncookiesSent` of the `TcpExt` rows: grows whenever a listener of the
    /// namespace drops a handshake or its completion (accept queue full) or answers a SYN with a
    /// cookie (SYN queue full). Either leaves clients that the kernel keeps no state for and that
    /// retransmit with backoff (seconds apart); nil when the rows are missing.
    public static func listenerPressure(_ text: String) -> UInt64? {
        let lines = text.split(separator: "\n")
        for (index, header) in lines.enumerated() where header.hasPrefix("TcpExt:") && index + 1 < lines.count {
            let names = header.split(separator: " ").dropFirst()
            let values = lines[index + 1].split(separator: " ").dropFirst()
            guard lines[index + 1].hasPrefix("TcpExt:"), names.count == values.count else { return nil }
            var found = 0
            var sum: UInt64 = 0
            for (name, value) in zip(names, values) where name == "ListenDrops" || name == "SyncookiesSent" {
                guard let number = UInt64(value) else { return nil }
                sum &+= number
                found += 1
            }
            return found == 2 ? sum : nil
        }
        return nil
    }
}

/// The kernel's TCP socket tables as rows: `/proc/<pid>/net/tcp{,6}` parsed here, and the same rows
/// from a socket diagnostics dump (``InetDiag``).
public enum ProcNetTCP {
    /// TCP states as the tables print them (`st`, include/net/tcp_states.h).
    public enum State: UInt8, Sendable {
        /// An established connection.
        case established = 0x01
        /// Our SYN sent, no answer yet.
        case synSent = 0x02
        /// A SYN received, our SYN-ACK sent.
        case synReceived = 0x03
        /// We closed; our FIN not yet acknowledged.
        case finWait1 = 0x04
        /// We closed; waiting for the peer's FIN.
        case finWait2 = 0x05
        /// Closed, waiting out 2 MSL (no socket of a process).
        case timeWait = 0x06
        /// Closed.
        case close = 0x07
        /// The peer closed; we have not yet.
        case closeWait = 0x08
        /// The peer closed, then we did; our FIN not yet acknowledged.
        case lastAck = 0x09
        /// Listening.
        case listen = 0x0A
        /// Both closed at once.
        case closing = 0x0B
        /// A request socket (new connection not yet accepted).
        case newSynReceived = 0x0C

        /// Whether a socket in this state is a connection a checkpoint can keep (``Row/isConnection``).
        public var isConnection: Bool {
            switch self {
            case .established, .finWait1, .finWait2, .closeWait, .lastAck, .closing: return true
            case .synSent, .synReceived, .timeWait, .close, .listen, .newSynReceived: return false
            }
        }
    }

    /// One row of the table.
    public struct Row: Hashable, Sendable {
        /// Local address and port.
        public var local: IPAddress
        /// Local port.
        public var localPort: UInt16
        /// Remote address (any address for a listener).
        public var remote: IPAddress
        /// Remote port (0 for a listener).
        public var remotePort: UInt16
        /// The state (`st`).
        public var state: State
        /// The socket's inode (`socket:[inode]` in `/proc/<pid>/fd`); 0 for time-wait and request
        /// sockets, which belong to no process.
        public var inode: UInt64
        /// `rx_queue`: for a listener, the connections in its accept queue; for a connection, the
        /// bytes received and not yet read.
        public var receiveQueue: UInt32 = 0

        /// The connection as a tuple.
        public var tuple: TCPConnectionTuple {
            TCPConnectionTuple(local: local, localPort: localPort, remote: remote, remotePort: remotePort)
        }

        /// Whether the row is a connection a checkpoint can keep: an established one, or one past
        /// established on its way to close (CRIU's `tcp_established` dumps these; half-open ones
        /// are skipped with `tcp_skip_in_flight`).
        public var isConnection: Bool { state.isConnection }
    }

    /// Parses a table (`tcp` when `ipv6` is false, else `tcp6`) as a little-endian kernel prints it
    /// (addresses as the hex of their 32-bit words in host order). The header line and malformed
    /// lines are skipped.
    public static func parse(_ text: String, ipv6: Bool) -> [Row] {
        var rows: [Row] = []
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 10,
                let local = endpoint(fields[1], ipv6: ipv6),
                let remote = endpoint(fields[2], ipv6: ipv6),
                let rawState = UInt8(fields[3], radix: 16), let state = State(rawValue: rawState),
                let inode = UInt64(fields[9]),
                let queues = fields[4].split(separator: ":").last, let receiveQueue = UInt32(queues, radix: 16)
            else { continue }
            rows.append(
                Row(
                    local: local.0,
                    localPort: local.1,
                    remote: remote.0,
                    remotePort: remote.1,
                    state: state,
                    inode: inode,
                    receiveQueue: receiveQueue
                )
            )
        }
        return rows
    }

    /// The connections on their way to the listeners on `ports` that no process has accepted
    /// yet: those in the listeners' accept queues (`rx_queue` of the LISTEN rows) and the request
    /// sockets of handshakes not yet complete (SYN_RECV rows, which the kernel keeps while the
    /// accept queue is full and retransmits its SYN-ACK for seconds). A checkpoint would reset
    /// both: CRIU dumps neither.
    public static func pendingConnections(_ rows: [Row], ports: Set<UInt16>) -> Int {
        var pending = 0
        for row in rows where ports.contains(row.localPort) {
            switch row.state {
            case .listen: pending += Int(row.receiveQueue)
            case .synReceived, .newSynReceived: pending += 1
            default: break
            }
        }
        return pending
    }

    /// `0100007F:1F90` or `00000000000000000000000001000000:1F90`.
    private static func endpoint(_ field: Substring, ipv6: Bool) -> (IPAddress, UInt16)? {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return nil }
        let hex = parts[0]
        guard hex.utf8.count == (ipv6 ? 32 : 8) else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 8)
            guard let word = UInt32(hex[index..<next], radix: 16) else { return nil }
            // The word was printed from memory in host (little-endian) order: its bytes, low
            // first, are the address bytes in network order.
            for shift in stride(from: 0, to: 32, by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt32(shift)))
            }
            index = next
        }
        guard let address = IPAddress(bytes: bytes) else { return nil }
        return (address, port)
    }
}
