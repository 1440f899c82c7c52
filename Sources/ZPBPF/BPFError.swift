import SystemPackage
import ZPSystem

/// An error from ZPBPF: loading, attaching, pinning or using the pod's BPF objects.
///
/// Every case names the input it concerns (port, path, program) and the reason.
public enum BPFError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The running kernel lacks a feature ZPBPF needs (found by a feature probe after a failure).
    case notSupported(feature: String, minimumKernel: String)
    /// A system or libbpf call failed; the error names the call, what it was called on and the
    /// `errno`.
    case system(SystemError)
    /// The kernel refused to load the object; `log` holds libbpf's messages and the verifier log.
    case loadFailed(errno: Errno, log: String)
    /// A port cannot be added because the pod already uses all `limit` slots of a map.
    case tooManyPorts(port: UInt16, limit: Int)
    /// An argument is invalid; `reason` says why.
    case invalidArgument(name: String, value: String, reason: String)
    /// The redirector was closed or removed before this call.
    case closed

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .notSupported(let feature, let minimumKernel):
            return "\(feature) is not supported by this kernel (needs Linux \(minimumKernel) or later)"
        case .system(let error):
            return "\(error.call)(\(error.subject)) failed: \(error.errno) (errno \(error.errno.rawValue))"
        case .loadFailed(let errno, let log):
            return "loading the zpbpf object failed: \(errno)\n\(log)"
        case .tooManyPorts(let port, let limit):
            return "port \(port): the pod already uses all \(limit) port slots"
        case .invalidArgument(let name, let value, let reason):
            return "invalid \(name) '\(value)': \(reason)"
        case .closed:
            return "the pod redirector is closed"
        }
    }
}
