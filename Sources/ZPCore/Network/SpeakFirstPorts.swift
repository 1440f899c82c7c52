// Which ports of a container speak first (the server sends before the client: MySQL/MariaDB, SMTP,
// FTP, ...), set by annotation and learned from what the application did on the connections the
// activator proxied (docs/decisions/0055-speak-first-ports.md). Standard library only.

/// Who sent the first byte on a connection the activator proxied to the restored application.
public enum FirstSpeaker: String, Sendable, Equatable {
    /// The application wrote before the client had sent anything (a greeting).
    case application
    /// The client sent first (a request).
    case client
}

/// The ports of one container whose server speaks first: the ones the annotation names
/// (`zeropod-swift/speaks-first-ports`) and the ones learned since the container was created.
///
/// Learning: a proxied connection on which the application wrote before the client sent anything
/// marks its port as speaking first; one on which the client sent first unmarks a learned port
/// (a wrong guess, or an application that changed). Ports the annotation names are never
/// unlearned: the annotation is the operator's word. Connections on which nobody sent a byte
/// teach nothing.
public struct SpeakFirstPorts: Sendable, Equatable {
    /// What one observation changed.
    public enum Change: Sendable, Equatable {
        /// `port` is learned as speaking first from now on.
        case learned(UInt16)
        /// `port`, learned before, no longer counts as speaking first.
        case unlearned(UInt16)
        /// Nothing changed.
        case none
    }

    /// The ports the annotation names.
    public let configured: Set<UInt16>
    /// The ports learned so far (never one of ``configured``).
    public private(set) var learned: Set<UInt16> = []

    /// Starts with the annotation's ports and nothing learned.
    /// - Parameter configured: the ports `zeropod-swift/speaks-first-ports` names.
    public init(configured: Set<UInt16> = []) {
        self.configured = configured
    }

    /// Whether a connection to `port` should restore the application at once.
    public func speaksFirst(_ port: UInt16) -> Bool {
        configured.contains(port) || learned.contains(port)
    }

    /// Records who spoke first on a proxied connection to `port`.
    /// - Parameters:
    ///   - port: the application port the connection was for.
    ///   - firstSpeaker: who sent the connection's first byte.
    /// - Returns: what changed.
    public mutating func connectionObserved(port: UInt16, firstSpeaker: FirstSpeaker) -> Change {
        if configured.contains(port) { return .none }
        switch firstSpeaker {
        case .application:
            return learned.insert(port).inserted ? .learned(port) : .none
        case .client:
            return learned.remove(port) != nil ? .unlearned(port) : .none
        }
    }
}
