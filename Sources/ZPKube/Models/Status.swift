/// `meta/v1 Status`: the body of every error answer of the API server (and of watch `ERROR` events).
public struct Status: Codable, Sendable, Hashable, Error {
    /// `kind` (`Status`).
    public var kind: String?
    /// `apiVersion` (`v1`).
    public var apiVersion: String?
    /// `status`: `Success` or `Failure`.
    public var status: String?
    /// A human-readable description.
    public var message: String?
    /// A machine-readable reason (`NotFound`, `Conflict`, `Invalid`, `Expired`, …).
    public var reason: String?
    /// Details naming the object and, for `Invalid`, the failing fields.
    public var details: StatusDetails?
    /// The HTTP status code it stands for.
    public var code: Int?

    /// A status with the given fields (`kind: Status`, `apiVersion: v1`).
    public init(
        status: String? = "Failure",
        message: String? = nil,
        reason: String? = nil,
        details: StatusDetails? = nil,
        code: Int? = nil
    ) {
        self.kind = "Status"
        self.apiVersion = "v1"
        self.status = status
        self.message = message
        self.reason = reason
        self.details = details
        self.code = code
    }
}

/// `details` of a ``Status``.
public struct StatusDetails: Codable, Sendable, Hashable {
    /// Name of the object concerned.
    public var name: String?
    /// API group of the object concerned.
    public var group: String?
    /// Kind (or resource) of the object concerned.
    public var kind: String?
    /// UID of the object concerned.
    public var uid: String?
    /// The failing fields of an `Invalid` answer.
    public var causes: [StatusCause]?
    /// Seconds to wait before retrying (`TooManyRequests`, `ServerTimeout`).
    public var retryAfterSeconds: Int?

    /// Details with the given fields.
    public init(
        name: String? = nil,
        group: String? = nil,
        kind: String? = nil,
        uid: String? = nil,
        causes: [StatusCause]? = nil,
        retryAfterSeconds: Int? = nil
    ) {
        self.name = name
        self.group = group
        self.kind = kind
        self.uid = uid
        self.causes = causes
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// One failing field of an `Invalid` answer.
public struct StatusCause: Codable, Sendable, Hashable {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden`, …
    public var reason: String?
    /// The description of the failure.
    public var message: String?
    /// The field path (`spec.containers[0].image`).
    public var field: String?

    /// A cause with the given fields.
    public init(reason: String? = nil, message: String? = nil, field: String? = nil) {
        self.reason = reason
        self.message = message
        self.field = field
    }
}
