import Foundation
import Synchronization
import ZPKube

/// A request as the HTTP layer hands it over.
struct APIRequest: Sendable {
    var method: String
    var path: String
    var rawQuery: String
    var query: [String: String]
    var contentType: String
    var accept: String
    var body: [UInt8]
    /// The authenticated user; nil when no credentials were presented.
    var user: String?
    /// Credentials were presented but are wrong (401 whatever the path).
    var badCredentials: Bool
}

/// What the HTTP layer writes back.
enum APIReply: Sendable {
    case response(status: Int, headers: [(String, String)], body: [UInt8])
    case watch(WatchSetup)
}

/// An accepted watch: the HTTP layer registers it with the store and streams its frames.
struct WatchSetup: Sendable {
    var resource: ResourceType
    var filter: ObjectFilter
    var resourceVersion: Int64?
    var timeout: Duration
    var bookmarks: Bool
    var table: Bool
    var includeObject: String
}

/// The resource and verb of a request, for authorization and errors.
struct ResourceRequest {
    var resource: ResourceType
    var namespace: String?
    var name: String?
    var subresource: String?
}

/// The API logic: routing, authentication results, authorization, validation, patches, the store.
final class APIServer: Sendable {
    let store: Store
    let settings: Mutex<KubeAPIDouble.Settings>
    let faults = Mutex<[KubeAPIDouble.InjectedFailure]>([])
    let recorded = Mutex<[KubeAPIDouble.RecordedRequest]>([])
    /// Resources of installed CustomResourceDefinitions.
    let customResources = Mutex<[ResourceType]>([])

    /// A built-in resource (`group` empty) or an installed custom one.
    func resourceType(plural: String, group: String = "") -> ResourceType? {
        if group.isEmpty, let builtIn = ResourceType.named(plural) { return builtIn }
        return customResources.withLock { $0.first { $0.plural == plural && $0.group == group } }
    }

    /// A resource by its plural alone (built-in first), for the double's own accessors.
    func resourceType(anyGroup plural: String) -> ResourceType? {
        ResourceType.named(plural) ?? customResources.withLock { $0.first { $0.plural == plural } }
    }

    init(settings: KubeAPIDouble.Settings) {
        self.store = Store(historyLimit: settings.historyLimit)
        self.settings = Mutex(settings)
        for namespace in ["default", "kube-system", "kube-public"] {
            // Stored like created objects: without kind/apiVersion (added when served).
            _ = try? store.modify(.namespaces, Store.Key(namespace: "", name: namespace)) { _ throws(StatusError) in
                .put(self.stamp(["metadata": ["name": .string(namespace)], "status": ["phase": "Active"]]))
            }
        }
    }

    // MARK: - entry

    func handle(_ request: APIRequest) -> APIReply {
        recorded.withLock {
            $0.append(
                KubeAPIDouble.RecordedRequest(
                    verb: request.method,
                    path: request.path,
                    query: request.query,
                    rawQuery: request.rawQuery,
                    contentType: request.contentType,
                    accept: request.accept,
                    body: String(decoding: request.body, as: UTF8.self),
                    user: request.user
                )
            )
        }
        do {
            return try route(request)
        } catch {
            return errorReply(error)
        }
    }

    func errorReply(_ error: StatusError) -> APIReply {
        var headers = [("Content-Type", "application/json")]
        if let retryAfter = error.retryAfterSeconds { headers.append(("Retry-After", String(retryAfter))) }
        return .response(status: error.code, headers: headers, body: Array(error.body.serialized()))
    }

    func json(_ value: JSON, status: Int = 200, warnings: [String] = []) -> APIReply {
        var headers = [("Content-Type", "application/json")]
        for warning in warnings { headers.append(("Warning", "299 - \(JSON.string(warning).text)")) }
        return .response(status: status, headers: headers, body: Array(value.serialized()))
    }

    private func route(_ request: APIRequest) throws(StatusError) -> APIReply {
        if request.badCredentials { throw StatusError.unauthorized() }
        let publicPaths: Set<String> = ["/version", "/healthz", "/livez", "/readyz"]
        if request.user == nil, !publicPaths.contains(request.path), !settings.withLock({ $0.allowAnonymous }) {
            throw StatusError.unauthorized()
        }
        let injected: KubeAPIDouble.InjectedFailure? = faults.withLock { faults in
            guard let index = faults.firstIndex(where: { $0.matches(request.method, request.path) }) else { return nil }
            faults[index].remaining -= 1
            let failure = faults[index]
            if faults[index].remaining <= 0 { faults.remove(at: index) }
            return failure
        }
        if let injected {
            if injected.status == 429 { throw StatusError.tooManyRequests(retryAfter: injected.retryAfterSeconds ?? 1) }
            var error = StatusError.internalError("injected failure")
            error.code = injected.status
            error.retryAfterSeconds = injected.retryAfterSeconds
            throw error
        }
        switch request.path {
        case "/healthz", "/livez", "/readyz":
            return .response(status: 200, headers: [("Content-Type", "text/plain")], body: Array("ok".utf8))
        case "/version":
            return json(Discovery.version(settings.withLock { $0.serverVersion }))
        case "/api":
            return json(Discovery.apiVersions())
        case "/apis":
            return json(Discovery.apiGroupList())
        case "/api/v1":
            return json(Discovery.resourceList(settings.withLock { $0.serverVersion }))
        default:
            break
        }
        let target: ResourceRequest
        if request.path.hasPrefix("/api/v1/") {
            target = try parseResourcePath(String(request.path.dropFirst("/api/v1/".count)), group: "")
        } else if request.path.hasPrefix("/apis/") {
            let parts = request.path.dropFirst("/apis/".count).split(
                separator: "/",
                maxSplits: 2,
                omittingEmptySubsequences: false
            )
            let custom = customResources.withLock { $0 }
            guard parts.count >= 2, let first = custom.first(where: { $0.group == parts[0] && $0.version == parts[1] })
            else {
                if request.path == "/apis" || request.path == "/apis/" { return json(Discovery.apiGroupList(custom)) }
                throw StatusError.pathNotFound
            }
            if parts.count == 2 || parts[2].isEmpty {
                return json(
                    Discovery.customResourceList(
                        custom.filter { $0.group == first.group && $0.version == first.version }
                    )
                )
            }
            target = try parseResourcePath(String(parts[2]), group: first.group)
        } else {
            throw StatusError.pathNotFound
        }
        try authorize(request, target)
        switch (request.method, target.name, target.subresource) {
        case ("GET", nil, nil):
            return request.query["watch"] == "true" || request.query["watch"] == "1"
                ? try watch(request, target) : try list(request, target)
        case ("GET", let name?, let subresource):
            let object = try existing(target.resource, target.namespace, name)
            if let subresource { try checkSubresource(target.resource, subresource) }
            return json(withKind(object, target.resource))
        case ("POST", nil, nil):
            return try create(request, target)
        case ("PUT", let name?, let subresource):
            return try update(request, target, name: name, subresource: subresource)
        case ("PATCH", let name?, let subresource):
            return try patch(request, target, name: name, subresource: subresource)
        case ("DELETE", let name?, nil):
            return try delete(request, target, name: name)
        default:
            throw StatusError.methodNotAllowed(request.method, target.resource.plural)
        }
    }

    // MARK: - paths, authorization

    private func parseResourcePath(_ path: String, group: String) throws(StatusError) -> ResourceRequest {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var namespace: String?
        if parts.first == "namespaces", parts.count >= 3, let resource = resourceType(plural: parts[2], group: group),
            resource.namespaced
        {
            namespace = parts[1]
            parts.removeFirst(2)
        }
        guard let first = parts.first, let resource = resourceType(plural: first, group: group), parts.count <= 3,
            !parts.contains(where: \.isEmpty)
        else { throw StatusError.pathNotFound }
        return ResourceRequest(
            resource: resource,
            namespace: namespace,
            name: parts.count > 1 ? parts[1] : nil,
            subresource: parts.count > 2 ? parts[2] : nil
        )
    }

    private func verb(_ request: APIRequest, _ target: ResourceRequest) -> String {
        switch request.method {
        case "GET":
            if target.name != nil { return "get" }
            return request.query["watch"] == "true" || request.query["watch"] == "1" ? "watch" : "list"
        case "POST": return "create"
        case "PUT": return "update"
        case "PATCH": return "patch"
        case "DELETE": return "delete"
        default: return request.method.lowercased()
        }
    }

    private func authorize(_ request: APIRequest, _ target: ResourceRequest) throws(StatusError) {
        guard let rules = settings.withLock({ $0.authorization }) else { return }
        let user = request.user ?? "system:anonymous"
        if user == "system:admin" { return }  // the tests' own in-process calls (system:masters)
        let verb = verb(request, target)
        let resource = target.resource.plural + (target.subresource.map { "/\($0)" } ?? "")
        let allowed = (rules[user] ?? []).contains { rule in
            (rule.verbs.contains(verb) || rule.verbs.contains("*"))
                && (rule.resources.contains(resource) || rule.resources.contains("*"))
        }
        if allowed { return }
        let scope = target.namespace.map { "in the namespace \"\($0)\"" } ?? "at the cluster scope"
        let subject = target.name.map { "\(target.resource.plural) \"\($0)\"" } ?? target.resource.plural
        throw StatusError.forbidden(
            "\(subject) is forbidden: User \"\(user)\" cannot \(verb) resource \"\(resource)\" in API group \"\(target.resource.group)\" \(scope)",
            resource: target.resource.plural,
            name: target.name
        )
    }

    private func checkSubresource(_ resource: ResourceType, _ subresource: String) throws(StatusError) {
        switch (resource.plural, subresource) {
        case ("pods", "status"), ("nodes", "status"), ("namespaces", "status"): return
        case (_, "status") where resource.statusSubresource: return
        case ("pods", "resize"):
            switch settings.withLock({ $0.serverVersion }) {
            case .v1_36: return
            case .v1_31: throw StatusError.pathNotFound
            }
        default: throw StatusError.pathNotFound
        }
    }

    // MARK: - helpers

    private func key(_ resource: ResourceType, _ namespace: String?, _ name: String) -> Store.Key {
        Store.Key(namespace: resource.namespaced ? (namespace ?? "") : "", name: name)
    }

    private func existing(_ resource: ResourceType, _ namespace: String?, _ name: String) throws(StatusError) -> JSON {
        guard let object = store.get(resource, key(resource, namespace, name)) else {
            throw StatusError.notFound(resource.plural, name)
        }
        return object
    }

    func withKind(_ object: JSON, _ resource: ResourceType) -> JSON {
        var object = object
        object["kind"] = .string(resource.kind)
        object["apiVersion"] = .string(resource.apiVersion)
        return object
    }

    /// Sets uid and creationTimestamp of a new object.
    func stamp(_ object: JSON) -> JSON {
        var object = object
        object[path: ["metadata", "uid"]] = .string(UUID().uuidString.lowercased())
        object[path: ["metadata", "creationTimestamp"]] = .string(KubeTime.time(Date()))
        return object
    }

    private func wantsTable(_ request: APIRequest) -> Bool {
        request.accept.split(separator: ",").first.map { $0.contains("as=Table") } ?? false
            && request.accept.contains("g=meta.k8s.io")
    }

    /// Decodes a request body as the resource's kind, checks `kind`/`apiVersion`, prunes unknown
    /// fields per `fieldValidation` (default Warn; Strict → 400).
    private func decodeBody(_ request: APIRequest, _ resource: ResourceType) throws(StatusError) -> (JSON, [String]) {
        let contentType = request.contentType.split(separator: ";").first.map { String($0).trimmingSpaces() } ?? ""
        guard contentType == "application/json" || contentType.isEmpty else {
            if contentType == "application/yaml" || contentType == "application/vnd.kubernetes.protobuf" {
                throw StatusError(
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: "the double only accepts application/json"
                )
            }
            throw StatusError(
                code: 415,
                reason: "UnsupportedMediaType",
                message:
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor"
            )
        }
        let object: JSON
        do {
            object = try JSON(parsing: request.body)
        } catch {
            throw StatusError.badRequest(
                "the object provided is unrecognized (must be of type \(resource.kind)): couldn't get version/kind; json parse error: \(error)"
            )
        }
        guard case .object = object else {
            throw StatusError.badRequest(
                "the object provided is unrecognized (must be of type \(resource.kind)): couldn't get version/kind; json parse error: json: cannot unmarshal \(object.typeName) into Go value of type struct"
            )
        }
        return try checkKindAndFields(object, request, resource)
    }

    private func checkKindAndFields(
        _ object: JSON,
        _ request: APIRequest,
        _ resource: ResourceType
    ) throws(StatusError)
        -> (JSON, [String])
    {
        if let kind = object["kind"]?.stringValue, !kind.isEmpty, kind != resource.kind {
            throw StatusError.badRequest(
                "\(resource.kind) in version \"v1\" cannot be handled as a \(resource.kind): no kind \"\(kind)\" is registered for version \"\(object["apiVersion"]?.stringValue ?? "v1")\" in scheme \"k8s.io/kubernetes/pkg/api/legacyscheme/scheme.go:30\""
            )
        }
        if let version = object["apiVersion"]?.stringValue, !version.isEmpty, version != resource.apiVersion {
            throw StatusError.badRequest(
                "\(resource.kind) in version \"v1\" cannot be handled as a \(resource.kind): no kind \"\(resource.kind)\" is registered for version \"\(version)\""
            )
        }
        if resource == .pods, let problem = Validation.badQuantity(object) {
            throw StatusError.badRequest(
                "\(resource.kind) in version \"v1\" cannot be handled as a \(resource.kind): \(problem)"
            )
        }
        let (pruned, unknown): (JSON, [String])
        if let schema = resource.schema {
            let applied = StructuralSchema.apply(object, schema: schema)
            (pruned, unknown) = (applied.0, applied.pruned)
        } else {
            (pruned, unknown) = Validation.pruneUnknownFields(object, kind: resource.kind)
        }
        let mode = request.query["fieldValidation"] ?? "Warn"
        switch mode {
        case "Strict":
            if !unknown.isEmpty {
                let list = unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", ")
                throw StatusError.badRequest("strict decoding error: \(list)")
            }
            return (pruned, [])
        case "Warn":
            return (pruned, unknown.map { "unknown field \"\($0)\"" })
        case "Ignore":
            return (pruned, [])
        default:
            throw StatusError.badRequest(
                "fieldValidation: Unsupported value: \"\(mode)\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            )
        }
    }

    private func filter(_ request: APIRequest, _ target: ResourceRequest) throws(StatusError) -> ObjectFilter {
        var filter = ObjectFilter(namespace: target.namespace)
        do throws(SelectorError) {
            if let text = request.query["labelSelector"], !text.isEmpty { filter.labels = try parseLabelSelector(text) }
            if let text = request.query["fieldSelector"], !text.isEmpty {
                filter.fields = try parseFieldSelector(text, resource: target.resource.plural)
            }
        } catch {
            throw StatusError.badRequest(error.message)
        }
        return filter
    }

    // MARK: - list and watch

    private func list(_ request: APIRequest, _ target: ResourceRequest) throws(StatusError) -> APIReply {
        let filter = try filter(request, target)
        var (objects, revision) = store.list(target.resource, filter: filter)
        var after: Store.Key?
        if let token = request.query["continue"], !token.isEmpty {
            guard let data = Data(base64Encoded: token), let decoded = try? JSON(parsing: data),
                let tokenRevision = decoded["rv"]?.integerValue, let namespace = decoded["ns"]?.stringValue,
                let name = decoded["name"]?.stringValue
            else { throw StatusError.badRequest("continue key is not valid: illegal base64 data") }
            if store.isCompacted(tokenRevision) {
                throw StatusError.gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
                )
            }
            after = Store.Key(namespace: namespace, name: name)
            revision = tokenRevision
        }
        if let after { objects = objects.filter { $0.0 > after } }
        var continueToken: String?
        var remaining: Int64?
        if let limitText = request.query["limit"], let limit = Int(limitText), limit > 0, objects.count > limit {
            remaining = Int64(objects.count - limit)
            objects = Array(objects.prefix(limit))
            let last = objects.last!.0
            let token: JSON = ["rv": .integer(revision), "ns": .string(last.namespace), "name": .string(last.name)]
            continueToken = token.serialized().base64EncodedString()
        }
        if wantsTable(request) {
            return json(
                Tables.table(
                    target.resource,
                    objects.map(\.1),
                    resourceVersion: String(revision),
                    continueToken: continueToken,
                    includeObject: request.query["includeObject"] ?? "Metadata"
                )
            )
        }
        var metadata: JSON = ["resourceVersion": .string(String(revision))]
        if let continueToken { metadata["continue"] = .string(continueToken) }
        if let remaining { metadata["remainingItemCount"] = .integer(remaining) }
        return json([
            "kind": .string(target.resource.kind + "List"), "apiVersion": .string(target.resource.apiVersion),
            "metadata": metadata,
            "items": .array(objects.map(\.1)),
        ])
    }

    private func watch(_ request: APIRequest, _ target: ResourceRequest) throws(StatusError) -> APIReply {
        let filter = try filter(request, target)
        var resourceVersion: Int64?
        if let text = request.query["resourceVersion"], !text.isEmpty, text != "0" {
            guard let value = Int64(text) else {
                throw StatusError.badRequest("resourceVersion: Invalid value: \"\(text)\": must be an integer")
            }
            resourceVersion = value
        }
        let settings = settings.withLock { $0 }
        var timeout = settings.defaultWatchTimeout
        if let text = request.query["timeoutSeconds"], let seconds = Int(text), seconds > 0 {
            timeout = .seconds(seconds)
        }
        if !settings.honourWatchTimeout { timeout = .seconds(86_400) }
        if let resourceVersion, store.isCompacted(resourceVersion), settings.goneAsHTTPStatus {
            throw StatusError.gone("too old resource version: \(resourceVersion) (\(store.compactedRevision - 1))")
        }
        return .watch(
            WatchSetup(
                resource: target.resource,
                filter: filter,
                resourceVersion: resourceVersion,
                timeout: timeout,
                bookmarks: request.query["allowWatchBookmarks"] == "true",
                table: wantsTable(request),
                includeObject: request.query["includeObject"] ?? "Metadata"
            )
        )
    }

    // MARK: - create

    private func create(_ request: APIRequest, _ target: ResourceRequest) throws(StatusError) -> APIReply {
        var (object, warnings) = try decodeBody(request, target.resource)
        let resource = target.resource
        if resource.namespaced {
            guard let namespace = target.namespace else { throw StatusError.methodNotAllowed("POST", resource.plural) }
            if let given = object[path: ["metadata", "namespace"]]?.stringValue, !given.isEmpty, given != namespace {
                throw StatusError.badRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            }
            object[path: ["metadata", "namespace"]] = .string(namespace)
            if store.get(.namespaces, Store.Key(namespace: "", name: namespace)) == nil {
                throw StatusError.namespaceNotFound(namespace)
            }
        }
        if (object[path: ["metadata", "name"]]?.stringValue ?? "").isEmpty,
            let generateName = object[path: ["metadata", "generateName"]]?.stringValue, !generateName.isEmpty
        {
            let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
            object[path: ["metadata", "name"]] = .string(
                generateName + String((0..<5).map { _ in alphabet.randomElement()! })
            )
        }
        for field in [
            "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
            "generation",
        ] {
            object[path: ["metadata", field]] = nil
        }
        // The status subresource: a create's status is dropped (written with /status afterwards).
        if resource.statusSubresource && resource.schema != nil { object["status"] = nil }
        let name = object[path: ["metadata", "name"]]?.stringValue ?? ""
        var errors: [FieldError]
        switch resource.plural {
        case "pods":
            errors = Validation.validatePodCreate(object)
            object[path: ["metadata", "generation"]] = 1
            if object[path: ["status", "phase"]] == nil { object[path: ["status", "phase"]] = "Pending" }
            object[path: ["status", "qosClass"]] = .string(Validation.qosClass(object))
        case "events":
            errors = Validation.validateEventCreate(object)
        default:
            errors = []
            Validation.validateMetadata(object, namespaced: resource.namespaced, errors: &errors)
            if let schema = resource.schema { errors += StructuralSchema.apply(object, schema: schema).errors }
        }
        if !errors.isEmpty { throw StatusError.invalid(kind: resource.kind, name: name, errors) }
        object["kind"] = nil
        object["apiVersion"] = nil
        object = stamp(object)
        if request.query["dryRun"] == "All" {
            return json(withKind(object, resource), status: 201, warnings: warnings)
        }
        let stored = try store.modify(resource, key(resource, target.namespace, name)) { current throws(StatusError) in
            if current != nil { throw StatusError.alreadyExists(resource.plural, name) }
            return .put(object)
        }
        return json(withKind(stored, resource), status: 201, warnings: warnings)
    }

    // MARK: - update and patch

    private func update(
        _ request: APIRequest,
        _ target: ResourceRequest,
        name: String,
        subresource: String?
    ) throws(StatusError)
        -> APIReply
    {
        if let subresource { try checkSubresource(target.resource, subresource) }
        let (object, warnings) = try decodeBody(request, target.resource)
        if let bodyName = object[path: ["metadata", "name"]]?.stringValue, bodyName != name {
            throw StatusError.badRequest(
                "the name of the object (\(bodyName)) does not match the name on the URL (\(name))"
            )
        }
        if let namespace = target.namespace, let given = object[path: ["metadata", "namespace"]]?.stringValue,
            !given.isEmpty, given != namespace
        {
            throw StatusError.badRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        }
        return try write(request, target, name: name, subresource: subresource, warnings: warnings) {
            _ throws(StatusError) in
            object
        }
    }

    private func patch(
        _ request: APIRequest,
        _ target: ResourceRequest,
        name: String,
        subresource: String?
    ) throws(StatusError)
        -> APIReply
    {
        if let subresource { try checkSubresource(target.resource, subresource) }
        let contentType = request.contentType.split(separator: ";").first.map { String($0).trimmingSpaces() } ?? ""
        let patchDocument: JSON
        switch contentType {
        case "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json":
            do {
                patchDocument = try JSON(parsing: request.body)
            } catch {
                throw StatusError.badRequest("error decoding patch: \(error)")
            }
        case "application/apply-patch+yaml", "application/apply-patch+cbor":
            throw StatusError(
                code: 415,
                reason: "UnsupportedMediaType",
                message: "server-side apply (\(contentType)) is not emulated by this API double"
            )
        default:
            throw StatusError.unsupportedMediaType(contentType)
        }
        var warnings: [String] = []
        let resource = target.resource
        if resource.schema != nil && contentType == "application/strategic-merge-patch+json" {
            // The real server has no strategic merge for custom resources (no Go struct tags).
            throw StatusError(
                code: 415,
                reason: "UnsupportedMediaType",
                message:
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            )
        }
        let reply = try write(request, target, name: name, subresource: subresource, warnings: []) {
            current throws(StatusError) in
            var patched: JSON
            do throws(PatchError) {
                switch contentType {
                case "application/json-patch+json": patched = try applyJSONPatch(patchDocument, to: current)
                case "application/merge-patch+json":
                    guard case .object = patchDocument else {
                        throw PatchError(kind: .malformed, message: "a merge patch must be a JSON object")
                    }
                    patched = applyMergePatch(patchDocument, to: current)
                default: patched = try applyStrategicMergePatch(patchDocument, to: current)
                }
            } catch {
                switch error.kind {
                case .malformed: throw StatusError.badRequest(error.message)
                case .notApplicable:
                    throw StatusError(code: 422, reason: "Invalid", message: error.message)
                }
            }
            let checked = try self.checkKindAndFields(patched, request, resource)
            warnings = checked.1
            return checked.0
        }
        return reply.withWarnings(warnings)
    }

    /// The read-modify-write shared by PUT and PATCH: the resourceVersion precondition, the strategy of the
    /// resource or subresource, validation, no new resourceVersion when nothing changed.
    private func write(
        _ request: APIRequest,
        _ target: ResourceRequest,
        name: String,
        subresource: String?,
        warnings: [String],
        _ produce: (JSON) throws(StatusError) -> JSON
    ) throws(StatusError) -> APIReply {
        let resource = target.resource
        let version = settings.withLock { $0.serverVersion }
        let dryRun = request.query["dryRun"] == "All"
        var dryRunResult: JSON?
        let stored = try store.modify(resource, key(resource, target.namespace, name)) { current throws(StatusError) in
            guard var old = current else { throw StatusError.notFound(resource.plural, name) }
            old["kind"] = .string(resource.kind)
            old["apiVersion"] = .string(resource.apiVersion)
            var new = try produce(old)
            // A resourceVersion in the new object (PUT body, or set by the patch) is a precondition.
            if let precondition = new[path: ["metadata", "resourceVersion"]]?.stringValue, !precondition.isEmpty,
                precondition != old[path: ["metadata", "resourceVersion"]]?.stringValue
            {
                throw StatusError.conflict(resource.plural, name)
            }
            // Fields the server owns.
            for field in [
                "uid", "creationTimestamp", "resourceVersion", "namespace", "name", "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                new[path: ["metadata", field]] = old[path: ["metadata", field]]
            }
            new["kind"] = nil
            new["apiVersion"] = nil
            old["kind"] = nil
            old["apiVersion"] = nil
            var errors: [FieldError] = []
            switch (resource.plural, subresource) {
            case (_, "status"):
                var kept = old
                kept["status"] = new["status"]
                new = kept
            case ("pods", "resize"):
                new = Validation.dropNonResizeUpdates(new: new, old: old)
                errors = Validation.validatePodResize(new: new, old: old)
            case ("pods", _):
                new["status"] = old["status"]
                let resourcesMutable: Bool
                switch version {
                case .v1_31: resourcesMutable = true
                case .v1_36: resourcesMutable = false
                }
                errors = Validation.validatePodUpdate(new: new, old: old, resourcesMutable: resourcesMutable)
            case ("events", _):
                errors = Validation.validateEventCreate(new)
            default:
                if resource.statusSubresource { new["status"] = old["status"] }
                Validation.validateMetadata(new, namespaced: resource.namespaced, errors: &errors)
            }
            if let schema = resource.schema { errors += StructuralSchema.apply(new, schema: schema).errors }
            if old[path: ["metadata", "deletionTimestamp"]] != nil {
                let before = Set((old[path: ["metadata", "finalizers"]]?.arrayValue ?? []).compactMap(\.stringValue))
                let after = Set((new[path: ["metadata", "finalizers"]]?.arrayValue ?? []).compactMap(\.stringValue))
                if !after.isSubset(of: before) {
                    errors.append(
                        .forbidden(
                            "metadata.finalizers",
                            "no new finalizers can be added if the object is being deleted"
                        )
                    )
                }
            }
            if !errors.isEmpty { throw StatusError.invalid(kind: resource.kind, name: name, errors) }
            if resource == .pods, new["spec"] != old["spec"] {
                new[path: ["metadata", "generation"]] = .integer(
                    (old[path: ["metadata", "generation"]]?.integerValue ?? 1) + 1
                )
            }
            if new == old { return .unchanged(old) }
            if dryRun {
                dryRunResult = new
                return .unchanged(old)
            }
            // The last finalizer of an object being deleted is gone: the object goes.
            if old[path: ["metadata", "deletionTimestamp"]] != nil,
                (new[path: ["metadata", "finalizers"]]?.arrayValue ?? []).isEmpty
            {
                return .delete
            }
            return .put(new)
        }
        return json(withKind(dryRunResult ?? stored, resource), warnings: warnings)
    }

    // MARK: - delete

    private func delete(_ request: APIRequest, _ target: ResourceRequest, name: String) throws(StatusError) -> APIReply
    {
        let resource = target.resource
        var preconditions: JSON?
        var deleteOptions: JSON?
        if !request.body.isEmpty {
            guard let options = try? JSON(parsing: request.body) else {
                throw StatusError.badRequest("the body of DeleteOptions is not JSON")
            }
            preconditions = options["preconditions"]
            deleteOptions = options
        }
        let deleted = try store.modify(resource, key(resource, target.namespace, name)) { current throws(StatusError) in
            guard let current else { throw StatusError.notFound(resource.plural, name) }
            if let uid = preconditions?["uid"]?.stringValue, uid != current[path: ["metadata", "uid"]]?.stringValue {
                throw StatusError.preconditionFailed(
                    resource.plural,
                    name,
                    "Precondition failed: UID in precondition: \(uid), UID in object meta: \(current[path: ["metadata", "uid"]]?.stringValue ?? "")"
                )
            }
            if let version = preconditions?["resourceVersion"]?.stringValue,
                version != current[path: ["metadata", "resourceVersion"]]?.stringValue
            {
                throw StatusError.preconditionFailed(
                    resource.plural,
                    name,
                    "Precondition failed: ResourceVersion in precondition: \(version), ResourceVersion in object meta: \(current[path: ["metadata", "resourceVersion"]]?.stringValue ?? "")"
                )
            }
            if request.query["dryRun"] == "All" { return .unchanged(current) }
            // Finalizers keep the object, marked as being deleted, until they are removed.
            let finalizers = current[path: ["metadata", "finalizers"]]?.arrayValue ?? []
            let grace =
                deleteOptions?["gracePeriodSeconds"]?.integerValue
                ?? request.query["gracePeriodSeconds"].flatMap { Int64($0) }
            let graceful =
                resource == .pods && settings.withLock { $0.gracefulPodDeletion }
                && current[path: ["spec", "nodeName"]]?.stringValue?.isEmpty == false && grace != 0
            if !finalizers.isEmpty || graceful {
                guard current[path: ["metadata", "deletionTimestamp"]] == nil else { return .unchanged(current) }
                var marked = current
                marked[path: ["metadata", "deletionTimestamp"]] = .string(KubeTime.time(Date()))
                marked[path: ["metadata", "deletionGracePeriodSeconds"]] = .integer(graceful ? (grace ?? 30) : 0)
                return .put(marked)
            }
            return .delete
        }
        return json(withKind(deleted, resource))
    }
}

extension APIReply {
    func withWarnings(_ warnings: [String]) -> APIReply {
        guard case .response(let status, var headers, let body) = self, !warnings.isEmpty else { return self }
        for warning in warnings { headers.append(("Warning", "299 - \(JSON.string(warning).text)")) }
        return .response(status: status, headers: headers, body: body)
    }
}
