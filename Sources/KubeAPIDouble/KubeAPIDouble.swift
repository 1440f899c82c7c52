import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Yams
import ZPKube

/// A test double of the Kubernetes API server for the resources the manager uses (decision 0021).
///
/// It serves HTTPS (a CA made in-process) or plain HTTP on 127.0.0.1, authenticates bearer tokens
/// and client certificates, optionally authorizes with RBAC-like rules, and enforces what the real
/// server enforces on these calls: resourceVersions from one global counter, optimistic concurrency
/// (409), watches with ADDED/MODIFIED/DELETED/BOOKMARK and 410 after a compaction, selectors, the
/// three patch types with their merge rules, field validation, pod update rules and the `resize`
/// subresource (as Kubernetes 1.36, or 1.31 where it does not exist), `Status` error bodies, and
/// server-side Tables for kubectl. Every request is recorded; faults can be injected.
///
/// Not emulated: server-side apply, protobuf, aggregated discovery, OpenAPI documents, graceful pod
/// deletion (deletes are immediate), admission plugins other than the namespace check, and consistent
/// list snapshots across pages.
public final class KubeAPIDouble: Sendable {
    /// Which Kubernetes version the double behaves like.
    public enum ServerVersion: Sendable, Hashable {
        /// 1.36: `pods/<name>/resize` exists; a plain pod update may not change container resources.
        case v1_36
        /// 1.31 with in-place scaling: no `resize` subresource (404); a pod update may change the
        /// containers' cpu/memory (QoS class immutable).
        case v1_31
    }

    /// One authorization rule (a ClusterRole rule for the core group).
    public struct PolicyRule: Sendable, Hashable {
        /// Verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or `*`).
        public var verbs: Set<String>
        /// Resources, with subresources as `pods/resize` (or `*`).
        public var resources: Set<String>

        /// A rule.
        public init(verbs: Set<String>, resources: Set<String>) {
            self.verbs = verbs
            self.resources = resources
        }
    }

    /// The double's behaviour; change it while running with ``update(_:)``.
    public struct Settings: Sendable {
        /// Serve HTTPS (default) or plain HTTP.
        public var tls = true
        /// The IPv4 address to listen on (its server certificate names it and 127.0.0.1), e.g. a
        /// test bridge's host side for clients in other network namespaces. Read at start.
        public var host = "127.0.0.1"
        /// Bearer tokens and the user each one authenticates.
        public var tokens: [String: String] = [:]
        /// Allow requests without credentials (as `system:anonymous`); kubectl sends no token over
        /// plain HTTP, so plain-HTTP tests need this.
        public var allowAnonymous = false
        /// RBAC-like rules per user; nil allows every authenticated request.
        public var authorization: [String: [PolicyRule]]?
        /// The Kubernetes version to behave like.
        public var serverVersion = ServerVersion.v1_36
        /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
        public var bookmarkInterval = Duration.seconds(60)
        /// The watch timeout when the request names none.
        public var defaultWatchTimeout = Duration.seconds(1800)
        /// End watches after their `timeoutSeconds` (false: a hung server that never ends them nor
        /// sends anything more).
        public var honourWatchTimeout = true
        /// Answer a watch from a compacted resourceVersion with HTTP 410 instead of the real server's
        /// 200 + ERROR event (some proxies do this; clients must handle both).
        public var goneAsHTTPStatus = false
        /// Delay before every answer (a slow server).
        public var responseDelay = Duration.zero
        /// Changes kept for watches before older ones are compacted automatically.
        public var historyLimit = 10_000
        /// Deleting a pod bound to a node only marks it (deletionTimestamp, deletionGracePeriodSeconds,
        /// 30 s unless the request names a grace period) as the real server does; the kubelet's (a
        /// test's) delete with `gracePeriodSeconds: 0` removes it. Off: deletes are immediate.
        public var gracefulPodDeletion = false

        /// Default settings: HTTPS, no tokens (add some), version 1.36.
        public init() {}
    }

    /// A recorded request.
    public struct RecordedRequest: Sendable, CustomStringConvertible {
        /// The HTTP method.
        public var verb: String
        /// The decoded path.
        public var path: String
        /// The decoded query items.
        public var query: [String: String]
        /// The raw query string.
        public var rawQuery: String
        /// `Content-Type`.
        public var contentType: String
        /// `Accept`.
        public var accept: String
        /// The body as text.
        public var body: String
        /// The authenticated user, if any.
        public var user: String?

        /// `VERB path?query`.
        public var description: String { rawQuery.isEmpty ? "\(verb) \(path)" : "\(verb) \(path)?\(rawQuery)" }
    }

    /// A failure to inject into the next matching requests.
    public struct InjectedFailure: Sendable {
        /// The HTTP status to answer (500, 503, 429, …).
        public var status: Int
        /// The `Retry-After` seconds to send, if any.
        public var retryAfterSeconds: Int?
        /// How many more requests fail.
        public var remaining: Int
        /// Only requests with this method, if set.
        public var verb: String?
        /// Only requests whose path starts with this, if set.
        public var pathPrefix: String?

        func matches(_ method: String, _ path: String) -> Bool {
            (verb == nil || verb == method) && (pathPrefix.map(path.hasPrefix) ?? true)
        }
    }

    let api: APIServer
    /// The CA whose certificate the server presents (and client certificates are checked against).
    public let certificateAuthority: TestCertificateAuthority
    private let sslContext: NIOSSLContext?
    private let group: any EventLoopGroup
    private struct Listener {
        var server: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var port = 0
    }
    private let listener = Mutex(Listener())

    /// The port it listens on (kept across ``stopListening()``/``startListening()``).
    public var port: Int { listener.withLock { $0.port } }

    private init(settings: Settings, authority: TestCertificateAuthority, sslContext: NIOSSLContext?) {
        self.api = APIServer(settings: settings)
        self.certificateAuthority = authority
        self.sslContext = sslContext
        self.group = MultiThreadedEventLoopGroup.singleton
    }

    /// Starts a double on `settings.host` (127.0.0.1 unless set; a free port unless `port` is given).
    /// - Throws: bind or TLS setup errors.
    public static func start(settings: Settings = Settings(), port: Int = 0) async throws -> KubeAPIDouble {
        let authority = try TestCertificateAuthority()
        var sslContext: NIOSSLContext?
        if settings.tls {
            let (certificatePEM, keyPEM) = try authority.issue(
                commonName: "kube-apiserver",
                ipAddresses: Array(Set([[127, 0, 0, 1], settings.host.split(separator: ".").compactMap { UInt8($0) }]))
                    .filter { $0.count == 4 },
                dnsNames: ["localhost"],
                server: true
            )
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map {
                    .certificate($0)
                },
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem))
            )
            configuration.trustRoots = .certificates(
                try NIOSSLCertificate.fromPEMBytes(Array(authority.certificatePEM.utf8))
            )
            configuration.certificateVerification = .optionalVerification
            sslContext = try NIOSSLContext(configuration: configuration)
        }
        let double = KubeAPIDouble(settings: settings, authority: authority, sslContext: sslContext)
        try await double.bind(port: port)
        return double
    }

    private func bind(port: Int) async throws {
        let sslContext = self.sslContext
        let api = self.api
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    // No pipelining assistance: it stops reading while a response is in flight, so
                    // a client's close (its TLS close_notify) during a watch went unread and the
                    // client waited out its 5 s TLS shutdown timeout. The real server keeps reading
                    // and ends the watch when the client goes; our clients do not pipeline.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: false,
                        withErrorHandling: true
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        APIConnectionHandler(api: api, tls: sslContext != nil)
                    )
                    self?.track(channel)
                }
            }
            .bind(host: api.settings.withLock { $0.host }, port: port)
            .get()
        listener.withLock {
            $0.server = channel
            $0.port = channel.localAddress?.port ?? port
        }
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        listener.withLock { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.listener.withLock { _ = $0.connections.removeValue(forKey: id) }
        }
    }

    // MARK: - lifecycle and faults

    /// The base URL (`https://<host>:<port>`, 127.0.0.1 unless the settings name another host).
    public var url: String {
        let (tls, host) = api.settings.withLock { ($0.tls, $0.host) }
        return "\(tls ? "https" : "http")://\(host):\(port)"
    }

    /// Stops listening and closes every connection (the server is unreachable).
    public func stopListening() async {
        let (server, connections) = listener.withLock { state in
            let result = (state.server, Array(state.connections.values))
            state.server = nil
            state.connections = [:]
            return result
        }
        try? await server?.close()
        for connection in connections { try? await connection.close() }
    }

    /// Listens again on the same port.
    /// - Throws: bind errors.
    public func startListening() async throws {
        guard listener.withLock({ $0.server == nil }) else { return }
        try await bind(port: port)
    }

    /// Stops the double for good.
    public func stop() async {
        await stopListening()
    }

    /// Changes the settings while running (tokens, version, delay, bookmark interval, …; `tls` and
    /// `historyLimit` keep their start values).
    public func update(_ change: (inout Settings) -> Void) {
        api.settings.withLock { change(&$0) }
    }

    /// The current settings.
    public var settings: Settings { api.settings.withLock { $0 } }

    /// Makes the next `count` matching requests fail with `status` (a 429 carries `Retry-After`).
    public func failNext(
        _ count: Int,
        status: Int,
        retryAfterSeconds: Int? = nil,
        verb: String? = nil,
        pathPrefix: String? = nil
    ) {
        api.faults.withLock {
            $0.append(
                InjectedFailure(
                    status: status,
                    retryAfterSeconds: retryAfterSeconds,
                    remaining: count,
                    verb: verb,
                    pathPrefix: pathPrefix
                )
            )
        }
    }

    /// Forgets the change history: watches and continue tokens from older resourceVersions get 410.
    public func compact() { api.store.compact() }

    /// Ends every open watch (as a restarting server or a load balancer does).
    public func closeWatches() { api.store.endAllWatches() }

    /// How many watches are open.
    public var openWatches: Int { api.store.openWatchCount }

    /// The current global resourceVersion.
    public var resourceVersion: Int64 { api.store.revision }

    // MARK: - recorded traffic

    /// Every request so far, in arrival order.
    public var requests: [RecordedRequest] { api.recorded.withLock { $0 } }

    /// Forgets the recorded requests.
    public func clearRequests() { api.recorded.withLock { $0 = [] } }

    // MARK: - state

    /// An object as stored (`resource` is the plural: `pods`, `events`, `nodes`, `namespaces`).
    public func object(_ resource: String, namespace: String?, name: String) -> JSON? {
        guard let type = api.resourceType(anyGroup: resource) else { return nil }
        return api.store.get(type, Store.Key(namespace: type.namespaced ? (namespace ?? "") : "", name: name))
            .map { api.withKind($0, type) }
    }

    /// Every stored object of a resource, sorted by namespace and name.
    public func objects(_ resource: String) -> [JSON] {
        guard let type = api.resourceType(anyGroup: resource) else { return [] }
        return api.store.list(type, filter: ObjectFilter()).0.map { api.withKind($0.1, type) }
    }

    /// A request to the double made in-process as `system:admin` (validation and watches apply, the
    /// request is recorded like any other).
    /// - Returns: the HTTP status and the decoded body.
    @discardableResult
    public func call(
        _ verb: String,
        _ path: String,
        query: [String: String] = [:],
        body: JSON? = nil,
        contentType: String = "application/json"
    )
        -> (status: Int, body: JSON)
    {
        let rawQuery = query.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
        let reply = api.handle(
            APIRequest(
                method: verb,
                path: path,
                rawQuery: rawQuery,
                query: query,
                contentType: contentType,
                accept: "application/json",
                body: body.map { Array($0.serialized()) } ?? [],
                user: "system:admin",
                badCredentials: false
            )
        )
        switch reply {
        case .response(let status, _, let bytes):
            return (status, (try? JSON(parsing: bytes)) ?? .string(String(decoding: bytes, as: UTF8.self)))
        case .watch:
            return (400, ["message": "use a real client for watches"])
        }
    }

    /// A CustomResourceDefinition manifest (YAML, one document, e.g. the repository's
    /// `config/components/migration/crd.yaml`) as the JSON ``installCustomResourceDefinition(_:)`` takes.
    /// - Throws: ``DoubleError`` (400) naming the file when it cannot be read or is no YAML mapping.
    public static func customResourceDefinition(yamlFile path: String) throws -> JSON {
        do {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            guard let object = try Yams.load(yaml: text), object is [String: Any] else {
                throw DoubleError(status: 400, body: ["kind": "Status", "message": .string("\(path): not a YAML mapping")])
            }
            return try JSON(parsing: Array(try JSONSerialization.data(withJSONObject: object)))
        } catch let error as DoubleError {
            throw error
        } catch {
            throw DoubleError(status: 400, body: ["kind": "Status", "message": .string("\(path): \(error)")])
        }
    }

    /// Serves the resource a CustomResourceDefinition (`apiextensions.k8s.io/v1`, as JSON) defines,
    /// under `/apis/<group>/<version>`, with its schema, status subresource and finalizers
    /// (decision 0051). Installing the same resource again replaces its definition.
    /// - Throws: ``DoubleError`` (400) when the definition lacks a group, names or a served version.
    public func installCustomResourceDefinition(_ definition: JSON) throws {
        let type: ResourceType
        do {
            type = try ResourceType.custom(definition: definition)
        } catch {
            throw DoubleError(status: error.code, body: error.body)
        }
        api.customResources.withLock { types in
            types.removeAll { $0.plural == type.plural && $0.group == type.group }
            types.append(type)
        }
    }

    /// Creates an object through the API as `system:admin`.
    /// - Throws: ``DoubleError`` with the server's answer when it is refused.
    @discardableResult
    public func create(_ resource: String, namespace: String? = nil, _ object: JSON) throws -> JSON {
        let base =
            api.resourceType(anyGroup: resource).map { $0.group.isEmpty ? "/api/v1" : "/apis/\($0.apiVersion)" }
            ?? "/api/v1"
        let path = namespace.map { "\(base)/namespaces/\($0)/\(resource)" } ?? "\(base)/\(resource)"
        let (status, body) = call("POST", path, body: object)
        guard status == 201 else { throw DoubleError(status: status, body: body) }
        return body
    }

    /// A refused in-process call.
    public struct DoubleError: Error, CustomStringConvertible {
        /// The HTTP status.
        public var status: Int
        /// The `Status` body.
        public var body: JSON
        /// Status and message.
        public var description: String { "\(status): \(body["message"]?.stringValue ?? body.text)" }
    }

    // MARK: - client configuration

    /// A ZPKube configuration for this double with a bearer token (HTTPS) or none.
    public func clientConfiguration(token: String? = nil, namespace: String? = nil) -> KubeConfiguration {
        KubeConfiguration(
            server: url,
            token: token.map(BearerToken.value),
            certificateAuthorityPEM: Array(certificateAuthority.certificatePEM.utf8),
            namespace: namespace,
            requestTimeout: .seconds(10),
            watchGrace: .seconds(5)
        )
    }

    /// A kubeconfig (YAML text) for this double: the CA inline, a token or a token file, a namespace.
    public func kubeconfig(token: String? = nil, tokenFile: String? = nil, namespace: String = "default") -> String {
        let ca = Data(certificateAuthority.certificatePEM.utf8).base64EncodedString()
        var user = "  user: {}\n"
        if let token { user = "  user:\n    token: \(token)\n" }
        if let tokenFile { user = "  user:\n    tokenFile: \(tokenFile)\n" }
        return """
            apiVersion: v1
            kind: Config
            clusters:
            - name: double
              cluster:
                server: \(url)
                certificate-authority-data: \(ca)
            contexts:
            - name: double
              context:
                cluster: double
                user: tester
                namespace: \(namespace)
            current-context: double
            users:
            - name: tester
            \(user)
            """
    }
}
