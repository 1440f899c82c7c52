// Mutual TLS between the managers of a cluster (decision 0049): one CA for the cluster (the
// `zeropod-system/ca-cert` secret, ed25519, made by the first manager that finds none), a leaf
// certificate per manager start with the pod IP as its only SAN, TLS 1.3 only, both sides
// presenting and verifying a certificate of that CA. swift-certificates makes the certificates,
// swift-nio-ssl speaks TLS.
import Crypto
import Foundation
import Logging
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// The cluster's CA for the node service: its certificate and private key.
public struct NodeCertificateAuthority: Sendable {
    /// The CA certificate, PEM.
    public let certificatePEM: String
    /// The CA's private key, PEM (PKCS#8 ed25519, like the original's secret).
    public let privateKeyPEM: String
    let certificate: Certificate
    let key: Certificate.PrivateKey

    /// The subject of generated CAs and leaves (the original's: `O=ctrox.dev, C=CH`).
    static func subject() throws -> DistinguishedName {
        try DistinguishedName {
            CountryName("CH")
            OrganizationName("ctrox.dev")
        }
    }

    /// A new ed25519 CA valid from `now` for `validity` (the original's: 87600 h).
    /// - Throws: errors from swift-certificates (none expected).
    public static func generate(
        now: Date = Date(),
        validity: TimeInterval = 87_600 * 3600
    ) throws -> NodeCertificateAuthority {
        let key = Curve25519.Signing.PrivateKey()
        let name = try subject()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now - 60,
            notValidAfter: now + validity,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true, keyCertSign: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
            },
            issuerPrivateKey: .init(key)
        )
        return try NodeCertificateAuthority(
            certificatePEM: certificate.serializeAsPEM().pemString,
            privateKeyPEM: Certificate.PrivateKey(key).serializeAsPEM().pemString
        )
    }

    /// A CA from PEM text (the secret's `tls.crt` and `tls.key`).
    /// - Throws: ``NodeTLSError`` naming what is wrong: unparsable, not a CA, key not the certificate's.
    public init(certificatePEM: String, privateKeyPEM: String) throws(NodeTLSError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw NodeTLSError("the CA certificate (tls.crt) is not a PEM certificate: \(error)")
        }
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw NodeTLSError("the CA key (tls.key) is not a PEM private key: \(error)")
        }
        guard key.publicKey == certificate.publicKey else {
            throw NodeTLSError("the CA key (tls.key) does not belong to the CA certificate (tls.crt)")
        }
        let constraints = try? certificate.extensions.basicConstraints
        guard case .isCertificateAuthority? = constraints else {
            throw NodeTLSError("the CA certificate (tls.crt) is not a CA (no basicConstraints CA:TRUE)")
        }
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.certificate = certificate
        self.key = key
    }

    /// A leaf certificate for a manager: a new ed25519 key, its pod IP as the only SAN, client and
    /// server use, signed by this CA.
    /// - Parameters:
    ///   - ipAddress: The manager's pod IP (IPv4 or IPv6 text).
    ///   - now: The start of the validity.
    ///   - validity: How long it is valid (a manager makes a new one at every start).
    /// - Throws: ``NodeTLSError`` for an address that is not an IP address.
    public func issueLeaf(
        ipAddress: String,
        now: Date = Date(),
        validity: TimeInterval = 87_600 * 3600
    ) throws(NodeTLSError)
        -> NodeCredentials
    {
        guard let bytes = Self.addressBytes(ipAddress) else {
            throw NodeTLSError(
                "POD_IP \"\(ipAddress)\" is not an IPv4 or IPv6 address: the node certificate needs it as its SAN"
            )
        }
        let leafKey = Curve25519.Signing.PrivateKey()
        do {
            let leaf = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: .init(leafKey.publicKey),
                notValidBefore: now - 60,
                notValidAfter: now + validity,
                issuer: certificate.subject,
                subject: Self.subject(),
                signatureAlgorithm: .ed25519,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes)))])
                },
                issuerPrivateKey: key
            )
            return NodeCredentials(
                caCertificatePEM: certificatePEM,
                certificatePEM: try leaf.serializeAsPEM().pemString,
                privateKeyPEM: try Certificate.PrivateKey(leafKey).serializeAsPEM().pemString
            )
        } catch {
            throw NodeTLSError("cannot issue the node certificate for \(ipAddress): \(error)")
        }
    }

    /// The 4 or 16 bytes of an IP address in text form.
    static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// What one manager presents: the CA it trusts, its leaf certificate and key (all PEM).
public struct NodeCredentials: Sendable {
    /// The CA certificate that both sides verify against.
    public var caCertificatePEM: String
    /// This manager's certificate.
    public var certificatePEM: String
    /// This manager's private key.
    public var privateKeyPEM: String

    /// Credentials from PEM text.
    public init(caCertificatePEM: String, certificatePEM: String, privateKeyPEM: String) {
        self.caCertificatePEM = caCertificatePEM
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
    }
}

/// A refused or unusable TLS setting, with the reason a user can act on.
public struct NodeTLSError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What is wrong.
    public var description: String

    /// An error.
    public init(_ description: String) {
        self.description = description
    }
}

/// The TLS contexts of the node service: TLS 1.3 only, a certificate required and verified on
/// both sides against the one CA; the client also checks that the server's certificate names the
/// address it dialled (the peer's pod IP).
public struct NodeTLS: Sendable {
    let server: NIOSSLContext
    let client: NIOSSLContext

    /// Contexts for `credentials`.
    /// - Throws: ``NodeTLSError`` when a PEM text cannot be used.
    public init(credentials: NodeCredentials) throws(NodeTLSError) {
        do {
            let ca = try NIOSSLCertificate(bytes: Array(credentials.caCertificatePEM.utf8), format: .pem)
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(credentials.certificatePEM.utf8)).map {
                NIOSSLCertificateSource.certificate($0)
            }
            let key = try NIOSSLPrivateKey(bytes: Array(credentials.privateKeyPEM.utf8), format: .pem)
            var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            server.minimumTLSVersion = .tlsv13
            server.maximumTLSVersion = .tlsv13
            server.trustRoots = .certificates([ca])
            server.certificateVerification = .noHostnameVerification
            // BoringSSL does not offer or accept ed25519 signatures unless asked to: without these
            // the handshake of two ed25519 leaves fails with NO_COMMON_SIGNATURE_ALGORITHMS.
            server.signingSignatureAlgorithms = [.ed25519]
            server.verifySignatureAlgorithms = [.ed25519]
            var client = TLSConfiguration.makeClientConfiguration()
            client.minimumTLSVersion = .tlsv13
            client.maximumTLSVersion = .tlsv13
            client.trustRoots = .certificates([ca])
            client.certificateChain = chain
            client.privateKey = .privateKey(key)
            client.certificateVerification = .fullVerification
            client.signingSignatureAlgorithms = [.ed25519]
            client.verifySignatureAlgorithms = [.ed25519]
            self.server = try NIOSSLContext(configuration: server)
            self.client = try NIOSSLContext(configuration: client)
        } catch {
            throw NodeTLSError("the node service's TLS credentials cannot be used: \(error)")
        }
    }

    /// Adds the server side of TLS to an accepted connection (``ZPTTRPC/TTRPCServer``'s
    /// `prepareConnection`); with a `logger`, a refused peer (no certificate, another CA's, an
    /// expired one) is logged as a warning naming its address and BoringSSL's reason.
    /// - Parameter refusal: the warning's message (the page-server proxy says it is the one).
    public func prepareServer(
        _ channel: any Channel,
        logger: Logger? = nil,
        refusal: Logger.Message = "refused a peer of the node service"
    ) throws {
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server))
        if let logger {
            try channel.pipeline.syncOperations.addHandler(
                TLSRefusalLogger(logger: logger, peer: channel.remoteAddress, message: refusal)
            )
        }
    }

    /// Adds the client side of TLS to a connection to a peer: with no host name, swift-nio-ssl
    /// checks the peer's certificate against the address it dialled (an IP SAN).
    public func prepareClient(_ channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: client, serverHostname: nil))
    }
}

/// Logs the TLS handshake failures of a node service connection (the serving manager's side of a
/// refused peer), then passes them on.
final class TLSRefusalLogger: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let logger: Logger
    let peer: SocketAddress?
    let message: Logger.Message

    init(logger: Logger, peer: SocketAddress?, message: Logger.Message = "refused a peer of the node service") {
        self.logger = logger
        self.peer = peer
        self.message = message
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            logger.warning(
                message,
                metadata: [
                    "peer": "\(peer.map { "\($0)" } ?? "?")", "error": "\(error)",
                ]
            )
        }
        context.fireErrorCaught(error)
    }
}
