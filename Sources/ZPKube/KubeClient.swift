import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// A Kubernetes API client on async-http-client: JSON, bearer tokens (re-read when rotated) or
/// client certificates, a timeout on every request, typed ``KubeError``s.
///
/// Written here rather than generated (decision 0020): the manager needs a handful of calls on two
/// resource types, and a generated client would bring thousands of models and no better control of
/// timeouts, retries and buffering. Call ``shutdown()`` before dropping the client.
public final class KubeClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: KubeConfiguration
    let http: HTTPClient
    let tokens: TokenProvider?
    let sleep: @Sendable (Duration) async throws -> Void
    let logger: Logger

    /// The longest `timeoutSeconds` a watch may ask for; the connection's idle read timeout is this
    /// plus ``KubeConfiguration/watchGrace``.
    public static let maximumWatchSeconds = 600

    /// A response body larger than this is refused (64 MiB).
    static let maximumBodyBytes = 64 << 20

    /// Makes a client (its own connection pool on the shared event loop group).
    ///
    /// - Parameters:
    ///   - configuration: where the server is and how to authenticate.
    ///   - logger: where throttling and re-authentication are logged (debug level).
    ///   - sleep: how waits (Retry-After) are made; tests pass a recording sleeper.
    /// - Throws: ``KubeConfigError`` when the TLS material cannot be loaded.
    public init(
        configuration: KubeConfiguration,
        logger: Logger = Logger(label: "zeropod.kube"),
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) throws(KubeConfigError) {
        self.configuration = configuration
        self.logger = logger
        self.sleep = sleep
        self.tokens = configuration.token.map(TokenProvider.init(source:))
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let ca = configuration.certificateAuthorityPEM {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(ca))
            }
            if configuration.insecureSkipTLSVerify {
                tls.certificateVerification = .none
            }
            if let client = configuration.clientCertificate {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(client.certificatePEM).map {
                    .certificate($0)
                }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: client.keyPEM, format: .pem))
            }
        } catch {
            throw KubeConfigError(source: configuration.server, field: "tls", reason: "\(error)")
        }
        let idle = Duration.seconds(KubeClient.maximumWatchSeconds) + configuration.watchGrace
        var http = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: TimeAmount(idle))
        )
        http.connectionPool.idleTimeout = .seconds(60)
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: http)
    }

    /// Closes every connection. Call it once, before the client is dropped.
    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// How often a token file was read so far (0 for a fixed token); for tests of rotation.
    public var tokenReads: Int { tokens?.reads ?? 0 }

    // MARK: - raw requests

    /// A response with its whole body.
    public struct Response: Sendable {
        /// The HTTP status.
        public var status: Int
        /// The headers.
        public var headers: HTTPHeaders
        /// The body.
        public var body: Data
    }

    /// Sends one request and returns a 2xx answer; retries once after a 401 with a re-read token
    /// file, and up to ``KubeConfiguration/throttleRetries`` times after a 429, waiting its
    /// `Retry-After`.
    ///
    /// - Parameters:
    ///   - verb: the HTTP method.
    ///   - path: the path below the server URL (`/api/v1/pods`).
    ///   - query: query items, encoded here.
    ///   - body: the request body.
    ///   - contentType: its `Content-Type`.
    ///   - accept: the `Accept` header.
    ///   - timeout: the whole request's timeout (default ``KubeConfiguration/requestTimeout``).
    /// - Throws: ``KubeError`` for every non-2xx answer, timeout or transport failure.
    public func send(
        verb: String,
        path: String,
        query: [(String, String)] = [],
        body: Data? = nil,
        contentType: String? = nil,
        accept: String = "application/json",
        timeout: Duration? = nil
    ) async throws(KubeError) -> Response {
        let target = query.isEmpty ? path : path + "?" + QueryEncoding.query(query)
        var reauthenticated = false
        var throttled = 0
        while true {
            do {
                return try await sendOnce(
                    verb: verb,
                    target: target,
                    body: body,
                    contentType: contentType,
                    accept: accept,
                    timeout: timeout ?? configuration.requestTimeout
                )
            } catch let error where error.kind == .unauthorized && !reauthenticated && (tokens?.invalidate() ?? false) {
                reauthenticated = true
                logger.debug("401: reading the token file again", metadata: ["path": "\(target)"])
            } catch let error where error.kind == .tooManyRequests && throttled < configuration.throttleRetries {
                let wait = error.retryAfter ?? .seconds(1)
                guard wait <= configuration.maximumRetryAfter else { throw error }
                throttled += 1
                logger.debug("429: waiting", metadata: ["path": "\(target)", "retryAfter": "\(wait)"])
                do { try await sleep(wait) } catch { throw KubeError(kind: .cancelled, verb: verb, path: target) }
            }
        }
    }

    private func makeRequest(
        verb: String,
        target: String,
        body: Data?,
        contentType: String?,
        accept: String
    ) throws(KubeError) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: configuration.server + target)
        request.method = HTTPMethod(rawValue: verb)
        request.headers.add(name: "Accept", value: accept)
        request.headers.add(name: "User-Agent", value: configuration.userAgent)
        if let tokens, configuration.server.hasPrefix("https:") {
            // Like kubectl: a bearer token never travels over plain HTTP.
            do {
                request.headers.add(name: "Authorization", value: "Bearer \(try tokens.token())")
            } catch {
                throw KubeError(kind: .unauthorized, verb: verb, path: target, underlying: error)
            }
        }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType ?? "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        return request
    }

    private struct TimeoutReached: Error {}

    private func sendOnce(
        verb: String,
        target: String,
        body: Data?,
        contentType: String?,
        accept: String,
        timeout: Duration
    ) async throws(KubeError) -> Response {
        let request = try makeRequest(verb: verb, target: target, body: body, contentType: contentType, accept: accept)
        let http = self.http
        let response: Response
        do {
            response = try await withThrowingTaskGroup(of: Response.self) { group in
                group.addTask {
                    let answer = try await http.execute(request, deadline: .now() + TimeAmount(timeout))
                    let bytes = try await answer.body.collect(upTo: KubeClient.maximumBodyBytes)
                    return Response(
                        status: Int(answer.status.code),
                        headers: answer.headers,
                        body: Data(bytes.readableBytesView)
                    )
                }
                group.addTask {
                    // A little after async-http-client's own deadline, so that a request still
                    // waiting for a connection fails with the reason (connection refused) first.
                    try await Task.sleep(for: timeout + .milliseconds(100))
                    throw TimeoutReached()
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch {
            throw transportError(error, verb: verb, target: target)
        }
        guard (200..<300).contains(response.status) else {
            throw KubeClient.error(
                status: response.status,
                headers: response.headers,
                body: response.body,
                verb: verb,
                path: target
            )
        }
        return response
    }

    func transportError(_ error: any Error, verb: String, target: String) -> KubeError {
        if error is TimeoutReached { return KubeError(kind: .timedOut, verb: verb, path: target, underlying: error) }
        if error is CancellationError { return KubeError(kind: .cancelled, verb: verb, path: target) }
        if let client = error as? HTTPClientError {
            if client == .deadlineExceeded || client == .readTimeout || client == .connectTimeout {
                return KubeError(kind: .timedOut, verb: verb, path: target, underlying: error)
            }
            if client == .cancelled { return KubeError(kind: .cancelled, verb: verb, path: target) }
        }
        if Task.isCancelled { return KubeError(kind: .cancelled, verb: verb, path: target) }
        return KubeError(kind: .unreachable, verb: verb, path: target, underlying: error)
    }

    /// The error for a non-2xx answer: its `Status` body (or one made from the text), `Retry-After`.
    static func error(status code: Int, headers: HTTPHeaders, body: Data, verb: String, path: String) -> KubeError {
        var status = try? JSONDecoder().decode(Status.self, from: body)
        if status?.kind != "Status" {
            let text = String(decoding: body.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            status = Status(message: text.isEmpty ? nil : text, code: code)
        }
        var retryAfter: Duration?
        if let header = headers.first(name: "Retry-After"),
            let seconds = Int(header.trimmingCharacters(in: .whitespaces))
        {
            retryAfter = .seconds(max(0, seconds))
        } else if let seconds = status?.details?.retryAfterSeconds {
            retryAfter = .seconds(max(0, seconds))
        }
        return KubeError(
            kind: KubeError.kind(forHTTPStatus: code),
            verb: verb,
            path: path,
            httpStatus: code,
            status: status,
            retryAfter: retryAfter
        )
    }

    // MARK: - typed calls

    func decode<T: Decodable>(_ type: T.Type, _ response: Response, verb: String, path: String) throws(KubeError) -> T {
        do {
            return try JSONDecoder().decode(type, from: response.body)
        } catch {
            throw KubeError(
                kind: .malformedResponse,
                verb: verb,
                path: path,
                httpStatus: response.status,
                underlying: error
            )
        }
    }

    func encode(_ value: some Encodable, verb: String, path: String) throws(KubeError) -> Data {
        do {
            return try JSON.encoder.encode(value)
        } catch {
            throw KubeError(kind: .badRequest, verb: verb, path: path, underlying: error)
        }
    }

    /// `GET` one object (or a subresource of it).
    /// - Throws: ``KubeError`` (`.notFound` when it does not exist).
    public func get<T: Decodable>(
        _ type: T.Type,
        _ resource: KubeResource,
        namespace: String?,
        name: String,
        subresource: String? = nil
    ) async throws(KubeError) -> T {
        let path = resource.objectPath(namespace: namespace, name: name, subresource: subresource)
        return try decode(type, try await send(verb: "GET", path: path), verb: "GET", path: path)
    }

    /// `GET` one page of a collection (across namespaces when `namespace` is nil).
    /// - Throws: ``KubeError`` (`.gone` when a `continue` token expired).
    public func list<T: Codable & Sendable>(
        _ type: T.Type,
        _ resource: KubeResource,
        namespace: String? = nil,
        options: ListOptions = ListOptions()
    ) async throws(KubeError) -> KubeList<T> {
        let path = resource.collectionPath(namespace: namespace)
        let response = try await send(verb: "GET", path: path, query: options.queryItems)
        return try decode(KubeList<T>.self, response, verb: "GET", path: path)
    }

    /// `POST` a new object; returns it as the server stored it (name, uid, resourceVersion set).
    /// - Throws: ``KubeError`` (`.conflict` with reason `AlreadyExists`, `.invalid`).
    public func create<T: Codable>(
        _ object: T,
        _ resource: KubeResource,
        namespace: String?,
        options: WriteOptions = WriteOptions()
    ) async throws(KubeError) -> T {
        let path = resource.collectionPath(namespace: namespace)
        let body = try encode(object, verb: "POST", path: path)
        let response = try await send(verb: "POST", path: path, query: options.queryItems, body: body)
        return try decode(T.self, response, verb: "POST", path: path)
    }

    /// `PUT` a whole object (or subresource); `metadata.resourceVersion` in it is the precondition.
    /// Send a ``JSON`` document read from the server to keep fields the typed models drop.
    /// - Throws: ``KubeError`` (`.conflict` when the object changed since it was read).
    public func update<T: Codable>(
        _ object: T,
        _ resource: KubeResource,
        namespace: String?,
        name: String,
        subresource: String? = nil,
        options: WriteOptions = WriteOptions()
    ) async throws(KubeError) -> T {
        let path = resource.objectPath(namespace: namespace, name: name, subresource: subresource)
        let body = try encode(object, verb: "PUT", path: path)
        let response = try await send(verb: "PUT", path: path, query: options.queryItems, body: body)
        return try decode(T.self, response, verb: "PUT", path: path)
    }

    /// `PATCH` an object (or subresource: `status`, `resize`) with the patch's content type; returns
    /// the patched object.
    /// - Throws: ``KubeError`` (`.notFound` for a subresource an older server lacks, `.invalid`,
    ///   `.conflict` when a resourceVersion in the patch is stale, `.unsupportedMediaType`).
    public func patch<T: Decodable>(
        _ type: T.Type,
        _ resource: KubeResource,
        namespace: String?,
        name: String,
        patch: Patch,
        subresource: String? = nil,
        options: WriteOptions = WriteOptions()
    ) async throws(KubeError) -> T {
        let path = resource.objectPath(namespace: namespace, name: name, subresource: subresource)
        let response = try await send(
            verb: "PATCH",
            path: path,
            query: options.queryItems,
            body: patch.body.serialized(),
            contentType: patch.contentType
        )
        return try decode(type, response, verb: "PATCH", path: path)
    }

    /// `DELETE` an object, optionally only if it still has the given resourceVersion or uid.
    /// - Throws: ``KubeError`` (`.notFound`, `.conflict` when a precondition fails).
    public func delete(
        _ resource: KubeResource,
        namespace: String?,
        name: String,
        preconditionResourceVersion: String? = nil,
        preconditionUID: String? = nil,
        gracePeriodSeconds: Int? = nil
    ) async throws(KubeError) {
        let path = resource.objectPath(namespace: namespace, name: name)
        var body: JSON?
        if preconditionResourceVersion != nil || preconditionUID != nil || gracePeriodSeconds != nil {
            var options: JSON = ["kind": "DeleteOptions", "apiVersion": "v1"]
            var preconditions: [String: JSON] = [:]
            if let preconditionResourceVersion {
                preconditions["resourceVersion"] = .string(preconditionResourceVersion)
            }
            if let preconditionUID { preconditions["uid"] = .string(preconditionUID) }
            if !preconditions.isEmpty { options["preconditions"] = .object(preconditions) }
            if let gracePeriodSeconds { options["gracePeriodSeconds"] = .integer(Int64(gracePeriodSeconds)) }
            body = options
        }
        _ = try await send(verb: "DELETE", path: path, body: body?.serialized())
    }

    // MARK: - watch

    /// Opens a watch (`GET …?watch=true`) and returns its events as they arrive.
    ///
    /// The server ends the watch after `options.timeoutSeconds` (at most ``maximumWatchSeconds``);
    /// a connection silent for longer than that plus ``KubeConfiguration/watchGrace`` fails with
    /// `.timedOut`. Iterate it from one task; stop iterating (or cancel the task) to close it.
    /// - Throws: ``KubeError`` when the server refuses the watch (`.gone` for a compacted
    ///   resourceVersion on servers that answer with HTTP 410 instead of an ERROR event).
    public func watch<T: Decodable & Sendable>(
        _ type: T.Type,
        _ resource: KubeResource,
        namespace: String? = nil,
        options: WatchOptions = WatchOptions()
    ) async throws(KubeError) -> WatchStream<T> {
        var options = options
        options.timeoutSeconds = min(max(options.timeoutSeconds, 1), KubeClient.maximumWatchSeconds)
        let path = resource.collectionPath(namespace: namespace)
        let target = path + "?" + QueryEncoding.query(options.queryItems)
        var reauthenticated = false
        var throttled = 0
        while true {
            let request = try makeRequest(
                verb: "GET",
                target: target,
                body: nil,
                contentType: nil,
                accept: "application/json"
            )
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, deadline: .now() + TimeAmount(configuration.requestTimeout))
            } catch {
                throw transportError(error, verb: "GET", target: target)
            }
            if response.status == .ok {
                return WatchStream(body: response.body, path: target)
            }
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: KubeClient.maximumBodyBytes)
            } catch {
                throw transportError(error, verb: "GET", target: target)
            }
            let error = KubeClient.error(
                status: Int(response.status.code),
                headers: response.headers,
                body: Data(body.readableBytesView),
                verb: "GET",
                path: target
            )
            if error.kind == .unauthorized, !reauthenticated, tokens?.invalidate() ?? false {
                reauthenticated = true
                continue
            }
            if error.kind == .tooManyRequests, throttled < configuration.throttleRetries {
                let wait = error.retryAfter ?? .seconds(1)
                guard wait <= configuration.maximumRetryAfter else { throw error }
                throttled += 1
                do { try await sleep(wait) } catch { throw KubeError(kind: .cancelled, verb: "GET", path: target) }
                continue
            }
            throw error
        }
    }
}
