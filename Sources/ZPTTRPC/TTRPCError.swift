import ZPCore

/// A ttrpc call that ended with a non-OK `google.rpc.Status`.
///
/// Servers throw it from a method handler to choose the status code; clients receive it when the
/// peer answered with an error status.
public struct TTRPCStatusError: Error, Sendable, CustomStringConvertible {
    /// The gRPC status code.
    public var code: RPCStatusCode
    /// The peer's or the handler's explanation.
    public var message: String

    /// Creates an error with a code and a message.
    public init(_ code: RPCStatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "ttrpc: \(code) (\(code.rawValue)): \(message)" }
}

/// Failures of the ttrpc transport itself (not of a remote method).
public enum TTRPCTransportError: Error, Sendable, CustomStringConvertible {
    /// The connection closed before the response to a call arrived.
    case connectionClosed(service: String, method: String)
    /// No response arrived before the deadline.
    case timedOut(service: String, method: String, after: Duration)
    /// The peer's response could not be decoded.
    case malformedResponse(service: String, method: String, reason: String)
    /// The peer runs as another user (SO_PEERCRED); the connection was refused.
    case peerUIDMismatch(peerUID: UInt32, ownUID: UInt32)
    /// More than `limit` messages of a server stream arrived that the caller had not read.
    case streamBufferOverflow(service: String, method: String, limit: Int)
    /// The connection failed with `reason` (a TLS alert from the peer, a refused certificate)
    /// before the call was answered.
    case connectionFailed(service: String, method: String, reason: String)

    public var description: String {
        switch self {
        case .connectionClosed(let s, let m): return "ttrpc: connection closed before \(s)/\(m) answered"
        case .timedOut(let s, let m, let d): return "ttrpc: \(s)/\(m) did not answer within \(d)"
        case .malformedResponse(let s, let m, let r): return "ttrpc: malformed response to \(s)/\(m): \(r)"
        case .peerUIDMismatch(let p, let o): return "ttrpc: peer uid \(p) is not our uid \(o)"
        case .streamBufferOverflow(let s, let m, let l):
            return "ttrpc: stream \(s)/\(m) ended: more than \(l) messages arrived that were not read"
        case .connectionFailed(let s, let m, let r): return "ttrpc: connection failed before \(s)/\(m) answered: \(r)"
        }
    }
}
