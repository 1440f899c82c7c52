import NIOCore
import Synchronization
import ZPCore

/// The activator's ports that speak first, shared by its listeners (which decide at accept) and
/// its proxied connections (which teach it): ZPCore's ``SpeakFirstPorts`` behind a lock, with the
/// probe check that keeps probes out of the forward-at-accept path (decision 0055).
///
/// Lives as long as the activator, i.e. the container in this shim: what was learned holds for
/// every later scale-down of the container and is gone with the shim process.
final class SpeakFirstDecisions: Sendable {
    private let ports: Mutex<SpeakFirstPorts>
    private let learns: Bool
    private let probes: any ProbeConnectionCheck

    init(configured: Set<UInt16>, learns: Bool, probes: any ProbeConnectionCheck) {
        self.ports = Mutex(SpeakFirstPorts(configured: configured))
        self.learns = learns
        self.probes = probes
    }

    /// Whether a connection accepted for `port` is forwarded at once: the port speaks first and
    /// the connection is not a known probe's. A connection whose addresses are unknown is
    /// inspected as usual.
    func forwardsAtAccept(port: UInt16, remote: SocketAddress?, local: SocketAddress?) -> Bool {
        guard ports.withLock({ $0.speaksFirst(port) }), let remote, let local else { return false }
        return !probes.isProbe(client: remote, server: local)
    }

    /// Records who spoke first on a proxied connection to `port` (nothing when learning is off).
    /// - Returns: the change and the ports that speak first after it.
    func observed(port: UInt16, firstSpeaker: FirstSpeaker) -> (SpeakFirstPorts.Change, Set<UInt16>) {
        guard learns else { return (.none, current) }
        return ports.withLock { state in
            let change = state.connectionObserved(port: port, firstSpeaker: firstSpeaker)
            return (change, state.configured.union(state.learned))
        }
    }

    /// The annotated and learned ports, as they are now.
    var snapshot: SpeakFirstPorts { ports.withLock { $0 } }

    private var current: Set<UInt16> { ports.withLock { $0.configured.union($0.learned) } }
}
