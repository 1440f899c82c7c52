import NIOCore
import SystemPackage
import ZPActivator
import ZPBPF
import ZPCore
import ZPSystem

/// ZPActivator's ``RedirectControl`` implemented with ZPBPF's ``PodRedirector``: switching a
/// port's redirect off is one map delete (`zp_redirect_on`), after which new connections to the
/// port reach the restored application directly.
///
/// The adapter does not own the redirector: the shim keeps it (it outlives scale-down cycles and
/// may be pinned for a restarted shim).
public struct BPFRedirectControl: RedirectControl {
    /// The pod's redirector.
    public let redirector: PodRedirector
    /// The container's handover listeners (decision 0046), if any.
    public let connections: ContainerConnections?

    /// Wraps `redirector`.
    /// - Parameters:
    ///   - redirector: the redirector of the pod whose ports the activator stands in for.
    ///   - connections: the container's handover listeners, ended with the redirect.
    public init(redirector: PodRedirector, connections: ContainerConnections? = nil) {
        self.redirector = redirector
        self.connections = connections
    }

    /// Switches the redirect for `port` off (``PodRedirector/setRedirect(port:enabled:)``), then
    /// ends its handover: the handover listeners close and their queued connections move to the
    /// restored application's listener.
    /// - Parameter port: the application's port.
    /// - Throws: `BPFError` from the map update (`.closed` when the redirector was closed).
    public func disable(port: UInt16) async throws {
        defer { connections?.endHandover(ports: [port]) }
        try redirector.setRedirect(port: port, enabled: false)
    }
}

/// ZPActivator's ``ApplicationSocketFactory`` for a pod: every socket is created inside the pod's
/// network namespace (ZPSystem's `NetworkNamespace`: `socket(2)` on a short-lived thread that
/// joined the namespace), so the activator, running in the shim's namespace, dials the
/// application's 127.0.0.1 / ::1.
///
/// Each call opens the namespace file and starts one thread (tens of microseconds); it runs once
/// per dial attempt, on the activator's restore path only.
public struct PodNamespaceSockets: ApplicationSocketFactory {
    /// The pod's network namespace.
    public let namespace: NetworkNamespace

    /// Names the namespace at `path`.
    /// - Parameter path: e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    public init(namespacePath path: FilePath) {
        self.namespace = NetworkNamespace(path: path)
    }

    /// A new unconnected TCP socket in the pod namespace; the activator owns it.
    /// - Parameter ipv6: `AF_INET6` if true, else `AF_INET`.
    /// - Throws: `SystemError` when the namespace cannot be joined or the socket not made.
    public func makeStreamSocket(ipv6: Bool) throws -> OwnedDescriptor {
        try namespace.makeTCPSocket(ipv6: ipv6)
    }
}

/// ZPActivator's ``ProbeConnectionCheck`` implemented with ZPBPF's ``PodRedirector``: a connection
/// is a known probe's when its client is one of the pod's probe sources or kubelet opened it
/// (``PodRedirector/isProbeConnection(client:clientPort:server:serverPort:)``), exactly what
/// `zp_sk_lookup` leaves to the activator on a handover port. A connection whose maps cannot be
/// read counts as a possible probe (the activator then inspects it as before: decision 0055).
public struct BPFProbeConnections: ProbeConnectionCheck {
    /// The pod's redirector (not owned).
    public let redirector: PodRedirector

    /// Wraps `redirector`.
    /// - Parameter redirector: the redirector of the pod whose ports the activator stands in for.
    public init(redirector: PodRedirector) {
        self.redirector = redirector
    }

    /// Looks the connection up in the pod's probe sources and the node's kubelet connections.
    public func isProbe(client: SocketAddress, server: SocketAddress) -> Bool {
        guard let clientText = client.ipAddress, let clientAddress = IPAddress(clientText),
            let serverText = server.ipAddress, let serverAddress = IPAddress(serverText),
            let clientPort = client.port.flatMap(UInt16.init(exactly:)),
            let serverPort = server.port.flatMap(UInt16.init(exactly:))
        else { return true }
        return
            (try? redirector.isProbeConnection(
                client: clientAddress,
                clientPort: clientPort,
                server: serverAddress,
                serverPort: serverPort
            )) ?? true
    }
}
