import ZPCore

/// A TCP connection that kubelet opened to a tracked port of a pod, as the pod's sockops program
/// recorded it when kubelet connected (decision 0040). Its traffic is never client activity.
public struct KubeletConnection: Sendable, Hashable, CustomStringConvertible {
    /// kubelet's side: the node's address (IPv4 and IPv4-mapped addresses as `.v4`).
    public var client: IPAddress
    /// kubelet's source port.
    public var clientPort: UInt16
    /// The address kubelet connected to (the pod's).
    public var server: IPAddress
    /// The pod's port.
    public var serverPort: UInt16

    /// Creates a value (tests).
    public init(client: IPAddress, clientPort: UInt16, server: IPAddress, serverPort: UInt16) {
        self.client = client
        self.clientPort = clientPort
        self.server = server
        self.serverPort = serverPort
    }

    /// `10.0.0.1:43210 -> 10.0.0.7:8080`.
    public var description: String {
        func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
            if case .v6 = address { return "[\(address)]:\(port)" }
            return "\(address):\(port)"
        }
        return "\(endpoint(client, clientPort)) -> \(endpoint(server, serverPort))"
    }

    /// The map key's layout (`struct zp_conn` in bpf/zpbpf.bpf.c): client and server addresses
    /// (16 bytes each, IPv4-mapped), client and server ports (u16 in the machine's byte order), 4
    /// bytes of zero.
    static let keySize = 40

    /// Decodes a `zp_conn` key; nil if it is not 40 bytes or an address is malformed.
    init?(key: [UInt8]) {
        guard key.count == Self.keySize,
            let client = IPAddress(bytes: Array(key[0..<16])), let server = IPAddress(bytes: Array(key[16..<32]))
        else { return nil }
        self.client = client.unmappedV4 ?? client
        self.server = server.unmappedV4 ?? server
        (clientPort, serverPort) = key.withUnsafeBytes {
            (
                $0.loadUnaligned(fromByteOffset: 32, as: UInt16.self),
                $0.loadUnaligned(fromByteOffset: 34, as: UInt16.self)
            )
        }
    }
}
