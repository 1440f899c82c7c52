import ZPKube

/// An error answer: the HTTP code and the `Status` body the real server sends for it.
struct StatusError: Error {
    var code: Int
    var reason: String
    var message: String
    var details: JSON?
    var retryAfterSeconds: Int?

    var body: JSON {
        var status: JSON = [
            "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure", "message": .string(message),
            "reason": .string(reason), "code": .integer(Int64(code)),
        ]
        if reason.isEmpty { status["reason"] = nil }
        if let details { status["details"] = details }
        return status
    }

    static func notFound(_ resource: String, _ name: String, group: String = "") -> StatusError {
        StatusError(
            code: 404,
            reason: "NotFound",
            message: "\(resource) \"\(name)\" not found",
            details: ["name": .string(name), "kind": .string(resource)]
        )
    }

    static func namespaceNotFound(_ namespace: String) -> StatusError {
        notFound("namespaces", namespace)
    }

    /// The answer for a path the server does not serve (a missing subresource on an older server).
    static let pathNotFound = StatusError(
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource",
        details: ["causes": [["reason": "UnexpectedServerResponse", "message": "404 page not found"]]]
    )

    static func conflict(_ resource: String, _ name: String) -> StatusError {
        StatusError(
            code: 409,
            reason: "Conflict",
            message:
                "Operation cannot be fulfilled on \(resource) \"\(name)\": the object has been modified; please apply your changes to the latest version and try again",
            details: ["name": .string(name), "kind": .string(resource)]
        )
    }

    static func preconditionFailed(_ resource: String, _ name: String, _ detail: String) -> StatusError {
        StatusError(
            code: 409,
            reason: "Conflict",
            message: "Operation cannot be fulfilled on \(resource) \"\(name)\": \(detail)",
            details: ["name": .string(name), "kind": .string(resource)]
        )
    }

    static func alreadyExists(_ resource: String, _ name: String) -> StatusError {
        StatusError(
            code: 409,
            reason: "AlreadyExists",
            message: "\(resource) \"\(name)\" already exists",
            details: ["name": .string(name), "kind": .string(resource)]
        )
    }

    static func invalid(kind: String, name: String, _ errors: [FieldError]) -> StatusError {
        let text = errors.count == 1 ? errors[0].text : "[" + errors.map(\.text).joined(separator: ", ") + "]"
        let causes: [JSON] = errors.map {
            ["reason": .string($0.kind.rawValue), "message": .string($0.message), "field": .string($0.field)]
        }
        return StatusError(
            code: 422,
            reason: "Invalid",
            message: "\(kind) \"\(name)\" is invalid: \(text)",
            details: ["name": .string(name), "kind": .string(kind), "causes": .array(causes)]
        )
    }

    static func badRequest(_ message: String) -> StatusError {
        StatusError(code: 400, reason: "BadRequest", message: message)
    }

    static func gone(_ message: String) -> StatusError {
        StatusError(code: 410, reason: "Expired", message: message)
    }

    static func unauthorized() -> StatusError {
        StatusError(code: 401, reason: "Unauthorized", message: "Unauthorized")
    }

    static func forbidden(_ message: String, resource: String, name: String?) -> StatusError {
        var details: JSON = ["kind": .string(resource)]
        if let name { details["name"] = .string(name) }
        return StatusError(code: 403, reason: "Forbidden", message: message, details: details)
    }

    static func methodNotAllowed(_ verb: String, _ resource: String) -> StatusError {
        StatusError(
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource",
            details: ["kind": .string(resource)]
        )
    }

    static func unsupportedMediaType(_ contentType: String) -> StatusError {
        StatusError(
            code: 415,
            reason: "UnsupportedMediaType",
            message:
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
        )
    }

    static func notAcceptable() -> StatusError {
        StatusError(
            code: 406,
            reason: "NotAcceptable",
            message:
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        )
    }

    static func tooManyRequests(retryAfter: Int) -> StatusError {
        StatusError(
            code: 429,
            reason: "TooManyRequests",
            message: "Too many requests, please try again later.",
            details: ["retryAfterSeconds": .integer(Int64(retryAfter))],
            retryAfterSeconds: retryAfter
        )
    }

    static func internalError(_ message: String) -> StatusError {
        StatusError(
            code: 500,
            reason: "InternalError",
            message: "Internal error occurred: \(message)",
            details: ["causes": [["message": .string(message)]]]
        )
    }
}
