import Crypto
import Foundation
import SwiftASN1
import X509

/// A throwaway certificate authority made in-process (swift-certificates, P-256): the double's
/// server certificate for 127.0.0.1/localhost and client certificates for users.
public struct TestCertificateAuthority: Sendable {
    /// The CA certificate (PEM).
    public let certificatePEM: String
    let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// A new CA, valid for a day.
    /// - Throws: errors from swift-certificates (none expected).
    public init(name: String = "zeropod-swift test CA") throws {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now - 3600,
            notValidAfter: now + 86_400,
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key)
        )
        self.key = key
        self.certificate = certificate
        self.certificatePEM = try certificate.serializeAsPEM().pemString
    }

    /// A leaf certificate and its key (both PEM) signed by this CA.
    /// - Parameters:
    ///   - commonName: the subject's CN (the user name for client certificates).
    ///   - organizations: the subject's O entries (groups).
    ///   - ipAddresses: IPv4 SANs (`[127, 0, 0, 1]`).
    ///   - dnsNames: DNS SANs.
    ///   - server: server (true) or client (false) usage.
    /// - Throws: errors from swift-certificates.
    public func issue(
        commonName: String,
        organizations: [String] = [],
        ipAddresses: [[UInt8]] = [],
        dnsNames: [String] = [],
        server: Bool
    ) throws -> (certificatePEM: String, keyPEM: String) {
        let leafKey = P256.Signing.PrivateKey()
        var names: [RelativeDistinguishedName] = []
        for organization in organizations {
            names.append(
                RelativeDistinguishedName(.init(type: .RDNAttributeType.organizationName, utf8String: organization))
            )
        }
        names.append(RelativeDistinguishedName(.init(type: .RDNAttributeType.commonName, utf8String: commonName)))
        let subject = DistinguishedName(names)
        let alternativeNames: [GeneralName] =
            ipAddresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
            + dnsNames.map { .dnsName($0) }
        let now = Date()
        let leaf = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(leafKey.publicKey),
            notValidBefore: now - 3600,
            notValidAfter: now + 86_400,
            issuer: certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([server ? .serverAuth : .clientAuth])
                if !alternativeNames.isEmpty { SubjectAlternativeNames(alternativeNames) }
            },
            issuerPrivateKey: .init(key)
        )
        return (try leaf.serializeAsPEM().pemString, leafKey.pemRepresentation)
    }

    /// The common name of a DER certificate's subject (how the double names a client-certificate user).
    static func commonName(derBytes: [UInt8]) -> String? {
        guard let certificate = try? Certificate(derEncoded: derBytes) else { return nil }
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return String(describing: attribute.value)
            }
        }
        return nil
    }
}
