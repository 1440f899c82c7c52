import ZPCore
import ZPTTRPC

/// Errors of the task service, in the shim's own terms.
public enum ShimError: Error, Sendable, CustomStringConvertible {
    /// No task or process with this id.
    case notFound(String)
    /// A task or exec id is already in use.
    case alreadyExists(String)
    /// The process is in the wrong state for the request.
    case failedPrecondition(String)
    /// The request asks for something this shim does not do.
    case notImplemented(String)
    /// The request is malformed.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .notFound(let s): return "not found: \(s)"
        case .alreadyExists(let s): return "already exists: \(s)"
        case .failedPrecondition(let s): return "failed precondition: \(s)"
        case .notImplemented(let s): return "not implemented: \(s)"
        case .invalidArgument(let s): return "invalid argument: \(s)"
        }
    }
}

extension ShimError {
    /// The one place where errors become ttrpc status codes (containerd's errdefs reads them back:
    /// NotFound, AlreadyExists, FailedPrecondition, Unimplemented and InvalidArgument keep their
    /// meaning across the wire; everything else is Unknown).
    static func status(for error: any Error) -> TTRPCStatusError {
        switch error {
        case let error as ShimError:
            switch error {
            case .notFound(let s): return TTRPCStatusError(.notFound, s)
            case .alreadyExists(let s): return TTRPCStatusError(.alreadyExists, s)
            case .failedPrecondition(let s): return TTRPCStatusError(.failedPrecondition, s)
            case .notImplemented(let s): return TTRPCStatusError(.unimplemented, s)
            case .invalidArgument(let s): return TTRPCStatusError(.invalidArgument, s)
            }
        case let error as ProtobufError:
            return TTRPCStatusError(.invalidArgument, "\(error)")
        case let error as TTRPCStatusError:
            return error
        default:
            return TTRPCStatusError(.unknown, "\(error)")
        }
    }
}
