// The cluster's node-service CA in the Secret `zeropod-system/ca-cert` (type kubernetes.io/tls,
// `tls.crt` and `tls.key`), as the original's installer keeps it: read it; when there is none,
// generate an ed25519 CA and create the Secret; when another node created it meanwhile (409), read
// theirs — every manager ends up with the same CA (decision 0049).
import Foundation
import Logging
import ZPKube

/// Loads or creates the CA Secret.
public struct CASecret: Sendable {
    /// The Secret's namespace.
    public var namespace: String
    /// The Secret's name.
    public var name: String

    /// The original's Secret: `zeropod-system/ca-cert`.
    public init(namespace: String = "zeropod-system", name: String = "ca-cert") {
        self.namespace = namespace
        self.name = name
    }

    static let secrets = KubeResource(group: "", version: "v1", plural: "secrets", namespaced: true)

    /// The CA from the Secret, generating and storing one if there is none.
    /// - Throws: ``KubeError`` from the API; ``NodeTLSError`` when the Secret holds no usable CA
    ///   (named, so an operator can delete or fix it).
    public func load(client: KubeClient, logger: Logger) async throws -> NodeCertificateAuthority {
        if let existing = try await read(client) { return existing }
        let generated = try NodeCertificateAuthority.generate()
        let secret: JSON = [
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": ["name": .string(name), "namespace": .string(namespace)],
            "data": [
                "tls.crt": .string(Data(generated.certificatePEM.utf8).base64EncodedString()),
                "tls.key": .string(Data(generated.privateKeyPEM.utf8).base64EncodedString()),
            ],
        ]
        let created: KubeError?
        do {
            _ = try await client.create(secret, Self.secrets, namespace: namespace)
            created = nil
        } catch {
            created = error
        }
        guard let refusal = created else {
            logger.info("generated the node service CA", metadata: ["secret": "\(namespace)/\(name)"])
            return generated
        }
        // Another manager was first: use theirs.
        guard refusal.kind == .conflict, let theirs = try await read(client) else { throw refusal }
        return theirs
    }

    private static func field(_ secret: JSON, _ key: String) -> String? {
        guard let text = secret[path: ["data", key]]?.stringValue, let data = Data(base64Encoded: text) else {
            return nil
        }
        return String(data: data, encoding: .utf8)
    }

    private func read(_ client: KubeClient) async throws -> NodeCertificateAuthority? {
        let secret: JSON
        do {
            secret = try await client.get(JSON.self, Self.secrets, namespace: namespace, name: name)
        } catch {
            if error.kind == .notFound { return nil }
            throw error
        }
        guard let certificate = Self.field(secret, "tls.crt"), let key = Self.field(secret, "tls.key") else {
            throw NodeTLSError("Secret \(namespace)/\(name) needs base64 data \"tls.crt\" and \"tls.key\"")
        }
        do {
            return try NodeCertificateAuthority(certificatePEM: certificate, privateKeyPEM: key)
        } catch {
            throw NodeTLSError("Secret \(namespace)/\(name): \(error)")
        }
    }
}
