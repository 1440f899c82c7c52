/// A failed Kubernetes API request: what was asked (verb and path), the HTTP status, and the server's
/// `Status` reason and message.
///
/// Switch on ``kind`` to handle the answers a controller expects (`.conflict` → re-read and retry,
/// `.notFound` → the object is gone, `.tooManyRequests` → wait ``retryAfter``, …).
public struct KubeError: Error, CustomStringConvertible {
    /// What kind of failure this is.
    public enum Kind: Sendable, Hashable {
        /// 400: the request is malformed (bad JSON, unknown field with `fieldValidation=Strict`).
        case badRequest
        /// 401: no credentials or wrong ones.
        case unauthorized
        /// 403: the credentials may not do this (RBAC).
        case forbidden
        /// 404: no such object or resource (also a missing subresource on an older server).
        case notFound
        /// 405: the resource does not support the verb.
        case methodNotAllowed
        /// 409: a conflict (stale resourceVersion, reason `Conflict`) or the object exists already
        /// (reason `AlreadyExists`).
        case conflict
        /// 410: the resourceVersion is too old (compacted), reason `Expired` or `Gone`.
        case gone
        /// 415: the server does not accept the body's content type (a patch type it lacks).
        case unsupportedMediaType
        /// 422: the object failed validation (`Invalid`); ``status`` lists the fields.
        case invalid
        /// 429: throttled; ``retryAfter`` says how long to wait.
        case tooManyRequests
        /// 5xx: the server failed.
        case serverError
        /// Another HTTP status.
        case otherHTTPStatus
        /// No answer within the request's timeout.
        case timedOut
        /// The server could not be reached (connection refused, reset, TLS failure).
        case unreachable
        /// The answer could not be decoded as the expected type.
        case malformedResponse
        /// The calling task was cancelled.
        case cancelled
    }

    /// The failure's kind.
    public var kind: Kind
    /// The HTTP verb of the request (`GET`, `PATCH`, …).
    public var verb: String
    /// The request's path and query.
    public var path: String
    /// The HTTP status, when the server answered.
    public var httpStatus: Int?
    /// The server's `Status` body, when it sent one.
    public var status: Status?
    /// How long the server asked to wait (`Retry-After` header or `details.retryAfterSeconds`).
    public var retryAfter: Duration?
    /// What failed below HTTP (transport or decoding error), if anything.
    public var underlying: (any Error)?

    /// The server's machine-readable reason (`Conflict`, `AlreadyExists`, `NotFound`, `Expired`, …).
    public var reason: String? { status?.reason }

    /// The server's message, or a description of the local failure.
    public var message: String {
        if let message = status?.message, !message.isEmpty { return message }
        if let underlying { return String(describing: underlying) }
        if let httpStatus { return "HTTP \(httpStatus)" }
        return "\(kind)"
    }

    /// A one-line description: verb, path, status, reason and message.
    public var description: String {
        var text = "\(verb) \(path): "
        if let httpStatus { text += "\(httpStatus) " }
        if let reason, !reason.isEmpty { text += "\(reason): " }
        return text + message
    }

    /// A failure with the given fields.
    public init(
        kind: Kind,
        verb: String,
        path: String,
        httpStatus: Int? = nil,
        status: Status? = nil,
        retryAfter: Duration? = nil,
        underlying: (any Error)? = nil
    ) {
        self.kind = kind
        self.verb = verb
        self.path = path
        self.httpStatus = httpStatus
        self.status = status
        self.retryAfter = retryAfter
        self.underlying = underlying
    }

    /// The kind an HTTP status stands for.
    public static func kind(forHTTPStatus code: Int) -> Kind {
        switch code {
        case 400: return .badRequest
        case 401: return .unauthorized
        case 403: return .forbidden
        case 404: return .notFound
        case 405: return .methodNotAllowed
        case 409: return .conflict
        case 410: return .gone
        case 415: return .unsupportedMediaType
        case 422: return .invalid
        case 429: return .tooManyRequests
        case 500...599: return .serverError
        default: return .otherHTTPStatus
        }
    }
}
