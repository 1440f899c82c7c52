import Foundation
import NIOSSL

/// Where the API server is and how to authenticate to it.
///
/// Built by ``inCluster(environment:serviceAccountDirectory:tokenRereadInterval:)`` inside a pod, by
/// ``kubeconfig(path:context:)`` for development and tests, or directly.
public struct KubeConfiguration: Sendable {
    /// The server's base URL (`https://10.96.0.1:443`), without a trailing slash; paths are appended.
    public var server: String
    /// The bearer token, if any (sent only over HTTPS, like kubectl).
    public var token: BearerToken?
    /// The client certificate and key (PEM), if any.
    public var clientCertificate: ClientCertificate?
    /// The CA bundle (PEM) that the server's certificate must chain to; nil trusts the system's roots.
    public var certificateAuthorityPEM: [UInt8]?
    /// Skip verifying the server's certificate (kubeconfig `insecure-skip-tls-verify`).
    public var insecureSkipTLSVerify: Bool
    /// The namespace of this context (or of the pod's service account); nil means `default`.
    public var namespace: String?
    /// The timeout of every request that is not a watch (default 30 s).
    public var requestTimeout: Duration
    /// How long a watch connection may stay silent beyond the `timeoutSeconds` it asked the server
    /// for, before the client gives it up (default 30 s).
    public var watchGrace: Duration
    /// How many times a request answered `429 Too Many Requests` is sent again after waiting for its
    /// `Retry-After` (default 3; 0 hands every 429 to the caller).
    public var throttleRetries: Int
    /// The longest `Retry-After` wait honoured inside one request (default 30 s); longer waits are
    /// handed to the caller as ``KubeError/Kind/tooManyRequests``.
    public var maximumRetryAfter: Duration
    /// The `User-Agent` header.
    public var userAgent: String

    /// A configuration for `server` with the given credentials.
    public init(
        server: String,
        token: BearerToken? = nil,
        clientCertificate: ClientCertificate? = nil,
        certificateAuthorityPEM: [UInt8]? = nil,
        insecureSkipTLSVerify: Bool = false,
        namespace: String? = nil,
        requestTimeout: Duration = .seconds(30),
        watchGrace: Duration = .seconds(30),
        throttleRetries: Int = 3,
        maximumRetryAfter: Duration = .seconds(30),
        userAgent: String = "zeropod-swift"
    ) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
        self.clientCertificate = clientCertificate
        self.certificateAuthorityPEM = certificateAuthorityPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.namespace = namespace
        self.requestTimeout = requestTimeout
        self.watchGrace = watchGrace
        self.throttleRetries = throttleRetries
        self.maximumRetryAfter = maximumRetryAfter
        self.userAgent = userAgent
    }
}

/// A bearer token: a fixed value, or a file that is read again when it may have changed
/// (projected service-account tokens rotate: the kubelet rewrites the file).
public enum BearerToken: Sendable, Hashable {
    /// A fixed token.
    case value(String)
    /// A token file, read again after `rereadEvery` and after every `401 Unauthorized`.
    case file(path: String, rereadEvery: Duration)
}

/// A TLS client certificate with its private key, both PEM.
public struct ClientCertificate: Sendable, Hashable {
    /// The certificate chain (PEM), leaf first.
    public var certificatePEM: [UInt8]
    /// The private key (PEM).
    public var keyPEM: [UInt8]

    /// A certificate and key.
    public init(certificatePEM: [UInt8], keyPEM: [UInt8]) {
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
    }
}

/// A configuration that cannot be used: names the file (or variable) and the field, and why.
public struct KubeConfigError: Error, CustomStringConvertible, Equatable {
    /// The file or environment variable that holds the bad setting.
    public var source: String
    /// The field within it (`users[0].user.token-file`), if any.
    public var field: String?
    /// Why it cannot be used.
    public var reason: String

    /// An error for `source` / `field`.
    public init(source: String, field: String? = nil, reason: String) {
        self.source = source
        self.field = field
        self.reason = reason
    }

    /// `source: field: reason`.
    public var description: String {
        if let field { return "\(source): \(field): \(reason)" }
        return "\(source): \(reason)"
    }
}

// MARK: - in-cluster

extension KubeConfiguration {
    /// The service-account directory every pod gets.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The configuration of a process running in a pod: `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, and the service account's `token` (read again every
    /// `tokenRereadInterval` and after a 401), `ca.crt` and `namespace` files.
    ///
    /// - Throws: ``KubeConfigError`` naming the missing variable or the unreadable file.
    public static func inCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        serviceAccountDirectory: String = serviceAccountDirectory,
        tokenRereadInterval: Duration = .seconds(60)
    ) throws(KubeConfigError) -> KubeConfiguration {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty else {
            throw KubeConfigError(
                source: "environment",
                field: "KUBERNETES_SERVICE_HOST",
                reason: "not set: the in-cluster configuration works only inside a pod"
            )
        }
        guard let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw KubeConfigError(
                source: "environment",
                field: "KUBERNETES_SERVICE_PORT",
                reason: "not set: the in-cluster configuration works only inside a pod"
            )
        }
        guard let portNumber = Int(port), (1...65535).contains(portNumber) else {
            throw KubeConfigError(
                source: "environment",
                field: "KUBERNETES_SERVICE_PORT",
                reason: "'\(port)' is not a port number"
            )
        }
        let tokenPath = serviceAccountDirectory + "/token"
        let token = try readFile(tokenPath, source: tokenPath, field: nil)
        if String(decoding: token, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw KubeConfigError(source: tokenPath, reason: "the service-account token file is empty")
        }
        let caPath = serviceAccountDirectory + "/ca.crt"
        let ca = try readFile(caPath, source: caPath, field: nil)
        try validateCertificates(ca, source: caPath, field: nil)
        var namespace: String?
        let namespacePath = serviceAccountDirectory + "/namespace"
        if FileManager.default.fileExists(atPath: namespacePath) {
            let text = String(decoding: try readFile(namespacePath, source: namespacePath, field: nil), as: UTF8.self)
            namespace = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return KubeConfiguration(
            server: "https://\(hostPart):\(portNumber)",
            token: .file(path: tokenPath, rereadEvery: tokenRereadInterval),
            certificateAuthorityPEM: ca,
            namespace: namespace
        )
    }
}

// MARK: - helpers shared with the kubeconfig loader

func readFile(_ path: String, source: String, field: String?) throws(KubeConfigError) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason =
            FileManager.default.fileExists(atPath: path) ? "cannot read \(path)" : "\(path) does not exist"
        throw KubeConfigError(source: source, field: field, reason: reason)
    }
    return Array(data)
}

func validateCertificates(_ pem: [UInt8], source: String, field: String?) throws(KubeConfigError) {
    do {
        let certificates = try NIOSSLCertificate.fromPEMBytes(pem)
        if certificates.isEmpty {
            throw KubeConfigError(source: source, field: field, reason: "holds no PEM certificate")
        }
    } catch let error as KubeConfigError {
        throw error
    } catch {
        throw KubeConfigError(source: source, field: field, reason: "not a PEM certificate (\(error))")
    }
}

func validatePrivateKey(_ pem: [UInt8], source: String, field: String?) throws(KubeConfigError) {
    do {
        _ = try NIOSSLPrivateKey(bytes: pem, format: .pem)
    } catch {
        throw KubeConfigError(source: source, field: field, reason: "not a PEM private key (\(error))")
    }
}
