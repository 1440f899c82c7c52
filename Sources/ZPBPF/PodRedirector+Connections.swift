import CZPBPF
import Glibc
import SystemPackage
import ZPCore
import ZPSystem

// Connections across a scale-down (decisions 0045 and 0046): the held connections of a
// checkpoint, the handover listeners of scaled-down ports, and the wake events of both. Kept in
// this file, apart from the redirect and activity API of PodRedirector.swift.

/// A connection the pod's tc program holds (drops its peer's segments) while its socket is in a
/// checkpoint.
public struct HeldConnection: Hashable, Sendable {
    /// The connection, pod side first.
    public var tuple: TCPConnectionTuple
    /// Who holds it (the container's owner tag).
    public var owner: UInt32
    /// Segments of the peer dropped so far.
    public var dropped: UInt64
    /// Whether a segment with data or FIN came (and woke the owner) since the hold or the last
    /// re-arm.
    public var woken: Bool

    /// A held connection (tests and fakes).
    public init(tuple: TCPConnectionTuple, owner: UInt32, dropped: UInt64, woken: Bool) {
        self.tuple = tuple
        self.owner = owner
        self.dropped = dropped
        self.woken = woken
    }
}

/// What woke a scaled-down container, read from the pod's event ring.
public struct PodWakeEvent: Hashable, Sendable {
    /// The kind of wake.
    public enum Kind: Hashable, Sendable {
        /// A new connection (not from a probe source) went to a port's handover listener.
        case connection
        /// The peer of a held connection sent data or FIN.
        case heldConnection
    }

    /// The kind of wake.
    public var kind: Kind
    /// The container's local port of the connection.
    public var port: UInt16
    /// The owner tag of the container to wake.
    public var owner: UInt32

    /// An event.
    public init(kind: Kind, port: UInt16, owner: UInt32) {
        self.kind = kind
        self.port = port
        self.owner = owner
    }
}

extension PodRedirector {
    /// Connections held per pod (the size of `zp_held`).
    public static let maxHeldConnections = 4096

    // MARK: held connections (decision 0045)

    /// Holds `connections` for `owner`: from now on the tc program drops every segment their peers
    /// send into the pod (so the kernel answers none of them with a reset while the sockets are
    /// in a checkpoint), and the first segment with data or FIN on one of them wakes `owner`
    /// (``wakeEvents(owner:)``). Already held connections keep their counters; their owner is
    /// rewritten.
    /// - Throws: `BPFError.invalidArgument` when the map is full (``maxHeldConnections``);
    ///   `.system` for another map failure.
    public func holdConnections(_ connections: some Sequence<TCPConnectionTuple>, owner: UInt32) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            for connection in connections {
                var key = Self.connectionKey(connection)
                var existing: (UInt32, UInt32, UInt64) = (0, 0, 0)
                let found = bpf_map_lookup_elem(h.maps.held.rawValue, &key, &existing) >= 0
                var value: (UInt32, UInt32, UInt64) = (owner, 0, found ? existing.2 : 0)
                let rc = bpf_map_update_elem(h.maps.held.rawValue, &key, &value, UInt64(BPF_ANY))
                if rc >= 0 { continue }
                if -rc == E2BIG {
                    throw .invalidArgument(
                        name: "held connection",
                        value: "\(connection)",
                        reason: "the pod already holds \(Self.maxHeldConnections) connections"
                    )
                }
                try libbpfCall("bpf_map_update_elem", "zp_held[\(connection)]") { rc }
            }
        }
    }

    /// Stops holding `connections` (their segments pass again); unknown ones are ignored.
    public func releaseConnections(_ connections: some Sequence<TCPConnectionTuple>) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            for connection in connections {
                var key = Self.connectionKey(connection)
                let rc = bpf_map_delete_elem(h.maps.held.rawValue, &key)
                if rc < 0 && -rc != ENOENT { try libbpfCall("bpf_map_delete_elem", "zp_held[\(connection)]") { rc } }
            }
        }
    }

    /// Stops holding every connection of `owner`.
    /// - Returns: the connections released, with their final counters.
    @discardableResult
    public func releaseConnections(owner: UInt32) throws(BPFError) -> [HeldConnection] {
        let mine = try heldConnections().filter { $0.owner == owner }
        try releaseConnections(mine.map(\.tuple))
        return mine
    }

    /// Every held connection of the pod.
    public func heldConnections() throws(BPFError) -> [HeldConnection] {
        try withHandles { (h) throws(BPFError) in
            var result: [HeldConnection] = []
            var key = [UInt8](repeating: 0, count: Self.connectionKeySize)
            var next = key
            var first = true
            while true {
                let rc =
                    first
                    ? bpf_map_get_next_key(h.maps.held.rawValue, nil, &next)
                    : bpf_map_get_next_key(h.maps.held.rawValue, &key, &next)
                if -rc == ENOENT { break }
                try libbpfCall("bpf_map_get_next_key", "zp_held") { rc }
                first = false
                key = next
                var value: (UInt32, UInt32, UInt64) = (0, 0, 0)
                guard bpf_map_lookup_elem(h.maps.held.rawValue, &next, &value) >= 0,
                    let tuple = Self.connection(fromKey: next)
                else { continue }  // deleted meanwhile
                result.append(HeldConnection(tuple: tuple, owner: value.0, dropped: value.2, woken: value.1 != 0))
            }
            return result
        }
    }

    // MARK: handover listeners (decision 0046)

    /// Marks `port` as handed over for `owner`: while its redirect is on, a new connection from a
    /// source that is not a probe source is not steered to the activator but takes the regular
    /// lookup, to the handover listener bound to the port, and wakes `owner` once per arming.
    /// - Throws: `.tooManyPorts` beyond ``maxPorts``.
    public func setHandover(port: UInt16, owner: UInt32) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var key = UInt32(port)
            var value: (UInt32, UInt32) = (owner, 0)
            let rc = bpf_map_update_elem(h.maps.handover.rawValue, &key, &value, UInt64(BPF_ANY))
            if rc >= 0 { return }
            if -rc == E2BIG { throw .tooManyPorts(port: port, limit: Self.maxPorts) }
            try libbpfCall("bpf_map_update_elem", "zp_handover[\(port)]") { rc }
        }
    }

    /// Registers a handover listener made by ``makeHandoverListener(for:inNamespaceAt:backlog:)``
    /// in `zp_handover_socks`, so that `zp_sk_lookup` gives it the connections the handover takes
    /// directly, rather than leaving them to the regular lookup, which finds an IPv4 application
    /// listener restored by CRIU before ours while the restored processes do not run yet
    /// (decision 0056). The kernel removes the entry when the socket closes.
    /// - Returns: false for a listener bound to one address (the regular lookup keeps choosing by
    ///   address), or when the pod's pins predate the map.
    /// - Throws: `BPFError` when the map refuses the socket.
    public func registerHandoverListener(
        _ socket: borrowing OwnedDescriptor,
        for listener: TCPListenerAddress
    ) throws(BPFError) -> Bool {
        let any: Bool
        switch listener.address {
        case .v4(let value): any = value == 0
        case .v6(let high, let low): any = high == 0 && low == 0
        }
        guard any else { return false }
        let fd = socket.rawValue
        return try withHandles { (h) throws(BPFError) -> Bool in
            guard let map = h.maps.handoverSockets else { return false }
            var key = Self.handoverSocketKey(port: listener.port, ipv6: listener.isIPv6)
            var value = UInt64(UInt32(bitPattern: fd))
            let rc = bpf_map_update_elem(map.rawValue, &key, &value, UInt64(BPF_ANY))
            if rc >= 0 { return true }
            try libbpfCall("bpf_map_update_elem", "zp_handover_socks for \(listener)") { rc }
            return false
        }
    }

    /// The key of a handover listener in `zp_handover_socks` (the port, `ZP_HANDOVER_V6` for IPv6).
    static func handoverSocketKey(port: UInt16, ipv6: Bool) -> UInt32 {
        UInt32(port) | (ipv6 ? 0x10000 : 0)
    }

    /// Whether a handover listener is registered for `port` (its entry goes when it closes).
    public func hasHandoverListener(port: UInt16, ipv6: Bool) throws(BPFError) -> Bool {
        try withHandles { (h) throws(BPFError) -> Bool in
            guard let map = h.maps.handoverSockets else { return false }
            var key = Self.handoverSocketKey(port: port, ipv6: ipv6)
            var cookie: UInt64 = 0
            return bpf_map_lookup_elem(map.rawValue, &key, &cookie) >= 0
        }
    }

    /// Ends the handover of `port`: its redirected connections go to the activator again.
    public func removeHandover(port: UInt16) throws(BPFError) {
        try withHandles { (h) throws(BPFError) in
            var key = UInt32(port)
            let rc = bpf_map_delete_elem(h.maps.handover.rawValue, &key)
            if rc < 0 && -rc != ENOENT { try libbpfCall("bpf_map_delete_elem", "zp_handover[\(port)]") { rc } }
        }
    }

    /// The handed-over ports with their owner and whether a connection woke it since arming.
    public func handoverPorts() throws(BPFError) -> [(port: UInt16, owner: UInt32, woken: Bool)] {
        try withHandles { (h) throws(BPFError) in
            var result: [(port: UInt16, owner: UInt32, woken: Bool)] = []
            var key: UInt32 = 0
            var next: UInt32 = 0
            var first = true
            while true {
                let rc =
                    first
                    ? bpf_map_get_next_key(h.maps.handover.rawValue, nil, &next)
                    : bpf_map_get_next_key(h.maps.handover.rawValue, &key, &next)
                if -rc == ENOENT { break }
                try libbpfCall("bpf_map_get_next_key", "zp_handover") { rc }
                first = false
                key = next
                var value: (UInt32, UInt32) = (0, 0)
                guard bpf_map_lookup_elem(h.maps.handover.rawValue, &next, &value) >= 0 else { continue }
                result.append((UInt16(truncatingIfNeeded: next), value.0, value.1 != 0))
            }
            return result.sorted { $0.port < $1.port }
        }
    }

    /// Whether anything woke `owner` since it was armed (a handover port's connection or a held
    /// connection's data): what the event ring said, read from the maps, for events the ring lost.
    public func pendingWake(owner: UInt32) throws(BPFError) -> Bool {
        if try handoverPorts().contains(where: { $0.owner == owner && $0.woken }) { return true }
        return try heldConnections().contains { $0.owner == owner && $0.woken }
    }

    /// Creates a handover listener for the application's listening socket `listener` inside the
    /// network namespace at `netnsPath`: same family, address, port and `IPV6_V6ONLY`, with
    /// `SO_REUSEADDR` and `SO_REUSEPORT`, listening, and with the pod's `sk_reuseport/migrate`
    /// program on its reuseport group. CRIU binds a restored listening socket with `SO_REUSEPORT`
    /// on (criu/sk-inet.c), so the application's listener joins this socket's group; when this
    /// socket closes, the connections queued on it move to the application's listener
    /// (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, Linux 5.14). The caller owns the descriptor; it must
    /// stay uid 0 like CRIU's restore (a reuseport group needs one owner uid).
    /// - Throws: `.system` naming the call (for instance `bind` with `EADDRINUSE` when the
    ///   application's socket still exists); `.notSupported(feature: "sk_reuseport/migrate",
    ///   minimumKernel: "5.14")` when the kernel refuses the program.
    public func makeHandoverListener(
        for listener: TCPListenerAddress,
        inNamespaceAt netnsPath: FilePath,
        backlog: Int32 = 4096
    ) throws(BPFError) -> OwnedDescriptor {
        let program = try withHandles { (h) throws(BPFError) -> SharedDescriptor in h.reuseportMigrate }
        let subject = "\(listener) in \(netnsPath)"
        let socket = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in
            try NetworkNamespace(path: netnsPath).makeSocket(
                domain: listener.isIPv6 ? AF_INET6 : AF_INET,
                type: CInt(SOCK_STREAM.rawValue)
            )
        }
        let fd = socket.rawValue
        try bpfSystem { () throws(SystemError) in
            var on: CInt = 1
            let size = socklen_t(MemoryLayout<CInt>.size)
            if listener.isIPv6 {
                var v6only: CInt = listener.v6Only ? 1 : 0
                try systemCall("setsockopt(IPV6_V6ONLY)", subject) {
                    setsockopt(fd, CInt(IPPROTO_IPV6), IPV6_V6ONLY, &v6only, size)
                }
            }
            try systemCall("setsockopt(SO_REUSEADDR)", subject) { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, size) }
            try systemCall("setsockopt(SO_REUSEPORT)", subject) { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, size) }
            try systemCall("bind", subject) { Self.bind(fd, listener) }
            try systemCall("listen", subject) { listen(fd, max(backlog, listener.backlog ?? 0)) }
        }
        var prog = program.rawValue
        if setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, socklen_t(MemoryLayout<CInt>.size)) != 0 {
            let code = Glibc.errno
            if code == EINVAL || code == ENOPROTOOPT {
                throw .notSupported(feature: "sk_reuseport/migrate", minimumKernel: "5.14")
            }
            throw .system(
                SystemError(
                    call: "setsockopt(SO_ATTACH_REUSEPORT_EBPF)",
                    subject: subject,
                    errno: Errno(rawValue: code)
                )
            )
        }
        return socket
    }

    private static func bind(_ fd: CInt, _ listener: TCPListenerAddress) -> CInt {
        switch listener.address {
        case .v4(let value):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = listener.port.bigEndian
            address.sin_addr.s_addr = value.bigEndian
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6:
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = listener.port.bigEndian
            let bytes = listener.address.bytes
            withUnsafeMutableBytes(of: &address.sin6_addr) { raw in
                for (i, byte) in bytes.enumerated() { raw[i] = byte }
            }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    // MARK: wake events

    /// Clears the "woken" marks of `owner`'s held connections and handover ports, so that the next
    /// segment or connection wakes it again (after a checkpoint re-armed it).
    public func rearmWakes(owner: UInt32) throws(BPFError) {
        for port in try handoverPorts() where port.owner == owner && port.woken {
            try setHandover(port: port.port, owner: owner)
        }
        let held = try heldConnections().filter { $0.owner == owner && $0.woken }
        try withHandles { (h) throws(BPFError) in
            for connection in held {
                var key = Self.connectionKey(connection.tuple)
                var value: (UInt32, UInt32, UInt64) = (owner, 0, connection.dropped)
                let rc = bpf_map_update_elem(h.maps.held.rawValue, &key, &value, UInt64(BPF_EXIST))
                if rc < 0 && -rc != ENOENT {
                    try libbpfCall("bpf_map_update_elem", "zp_held[\(connection.tuple)]") { rc }
                }
            }
        }
    }

    /// The wake events of `owner` (a new connection on one of its handover ports, data or FIN on
    /// one of its held connections), read by one thread per pod from the `zp_events` ring (started
    /// here on first use, stopped by ``close()`` and ``remove()``, which finish every stream). A
    /// second call for the same owner finishes the first stream.
    /// - Throws: `.system` when the ring or the thread's wake-up descriptor cannot be opened;
    ///   `.closed` after ``close()``.
    public func wakeEvents(owner: UInt32) throws(BPFError) -> AsyncStream<PodWakeEvent> {
        let map = try withHandles { (h) throws(BPFError) -> SharedDescriptor in h.maps.events }
        let watcher = try eventWatcher.withLock { (current) throws(BPFError) -> PodEventWatcher in
            if let current { return current }
            let started = try PodEventWatcher(eventsMap: map)
            current = started
            return started
        }
        return watcher.subscribe(owner: owner)
    }

    func stopEventWatcher() {
        let watcher = eventWatcher.withLock { current -> PodEventWatcher? in
            defer { current = nil }
            return current
        }
        watcher?.shutdown()
    }

    // MARK: keys

    static let connectionKeySize = 40

    /// `struct zp_conn_key`: local (16), remote (16), local port, remote port (u16, host order), pad.
    static func connectionKey(_ c: TCPConnectionTuple) -> [UInt8] {
        var key = c.local.v4Mapped.bytes + c.remote.v4Mapped.bytes
        withUnsafeBytes(of: c.localPort) { key += $0 }
        withUnsafeBytes(of: c.remotePort) { key += $0 }
        key += [0, 0, 0, 0]
        return key
    }

    static func connection(fromKey key: [UInt8]) -> TCPConnectionTuple? {
        guard key.count == connectionKeySize,
            let local = IPAddress(bytes: Array(key[0..<16])), let remote = IPAddress(bytes: Array(key[16..<32]))
        else { return nil }
        let localPort = UInt16(key[32]) | UInt16(key[33]) << 8
        let remotePort = UInt16(key[34]) | UInt16(key[35]) << 8
        return TCPConnectionTuple(
            local: local.unmappedV4 ?? local,
            localPort: localPort,
            remote: remote.unmappedV4 ?? remote,
            remotePort: remotePort
        )
    }
}
