import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPManager
import ZPTTRPC
import ZPTestSupport

// The node service's mutual TLS (decision 0049): a peer with a certificate of the cluster's CA for
// the address it is dialled at gets the image; a peer without a valid certificate — none, another
// CA's, an expired one, one for another address — is refused, and the error says why. Each
// refusal's text is printed: it is what a user finds in the Migration's status message (the target
// pulling) and in the source manager's log ("refusing ttrpc connection").

/// A node service on 127.0.0.1 with one method (PullImage answering one chunk) and the server
/// side's refusals.
/// What the server side saw.
final class Refusals: Sendable {
    let texts = Mutex<[String]>([])
    let port = Mutex<Int?>(nil)
    var all: [String] { texts.withLock { $0 } }
}

func withPeerServer(_ credentials: NodeCredentials, _ body: (Int, Refusals) async throws -> Void) async throws {
    let tls = try NodeTLS(credentials: credentials)
    var router = TTRPCRouter()
    router.registerServerStream(service: NodeAPI.service, method: NodeAPI.Method.pullImage.rawValue) { _, writer in
        try await writer.send(NodeAPI.Image(imageData: Array("image".utf8)).encoded())
    }
    let refusals = Refusals()
    var logger = Logger(label: "peer-server")
    logger.logLevel = .critical
    let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            try await server.run(
                tcpHost: "127.0.0.1",
                port: 0,
                prepareConnection: { channel in
                    try tls.prepareServer(channel)
                    try channel.pipeline.syncOperations.addHandler(RefusalRecorder(refusals: refusals))
                },
                onListening: { address in refusals.port.withLock { $0 = address.port } }
            )
        }
        #expect(await eventuallyAsync { refusals.port.withLock { $0 } != nil })
        try await body(refusals.port.withLock { $0 }!, refusals)
        group.cancelAll()
    }
}

/// Records TLS errors the server sees (the handshake's refusal of a client certificate).
final class RefusalRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let refusals: Refusals
    init(refusals: Refusals) { self.refusals = refusals }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        refusals.texts.withLock { $0.append("\(error)") }
        context.fireErrorCaught(error)
    }
}

/// What a pull got.
enum PullOutcome: Equatable {
    case success([UInt8])
    case failure(String)
}

/// Pulls through a client with `prepare` (a TLS client handler) and returns the chunks or the error text.
func pull(
    port: Int,
    host: String = "127.0.0.1",
    _ prepare: @escaping @Sendable (any Channel) throws -> Void
) async -> PullOutcome {
    do {
        let client = NodeClient(
            client: try await TTRPCClient.connect(
                host: host,
                port: port,
                group: MultiThreadedEventLoopGroup.singleton,
                prepareConnection: prepare
            )
        )
        var bytes: [UInt8] = []
        do {
            for try await chunk in client.pullImage(
                NodeAPI.PullImageRequest(imageID: String(repeating: "0", count: 64))
            ) { bytes += chunk }
        } catch {
            await client.close()
            return .failure("\(error)")
        }
        await client.close()
        return .success(bytes)
    } catch {
        return .failure("\(error)")
    }
}

/// Keeps the warnings a logger writes.
struct CapturingLogHandler: LogHandler {
    final class Lines: Sendable {
        let all = Mutex<[String]>([])
    }
    let lines: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level,
        message: Logger.Message,
        metadata: Logger.Metadata?,
        source: String,
        file: String,
        function: String,
        line: UInt
    ) {
        let fields = (metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        lines.all.withLock { $0.append("\(level) \(message) \(fields)") }
    }
}

@Suite struct NodeTLSTests {
    static let ca = try! NodeCertificateAuthority.generate()

    @Test func sameCA_rightAddress_isServed() async throws {
        let server = try Self.ca.issueLeaf(ipAddress: "127.0.0.1")
        let client = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
        try await withPeerServer(server) { port, refusals in
            let result = await pull(port: port) { try client.prepareClient($0) }
            #expect(result == .success(Array("image".utf8)))
            #expect(refusals.all.isEmpty)
        }
    }

    @Test func peerWithoutCertificate_isRefused() async throws {
        try await withPeerServer(try Self.ca.issueLeaf(ipAddress: "127.0.0.1")) { port, refusals in
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv13
            configuration.verifySignatureAlgorithms = [.ed25519]
            configuration.trustRoots = .certificates([
                try NIOSSLCertificate(bytes: Array(Self.ca.certificatePEM.utf8), format: .pem)
            ])
            let context = try NIOSSLContext(configuration: configuration)
            let result = await pull(port: port) {
                try $0.pipeline.syncOperations.addHandler(
                    try NIOSSLClientHandler(context: context, serverHostname: nil)
                )
            }
            guard case .failure(let text) = result else {
                Issue.record("served without a client certificate")
                return
            }
            print("mTLS refusal, no client certificate — the puller sees: \(text)")
            #expect(await eventuallyAsync { !refusals.all.isEmpty })
            print("mTLS refusal, no client certificate — the server logs: \(refusals.all.first ?? "")")
            #expect(refusals.all.first?.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") == true)
        }
    }

    @Test func peerOfAnotherCA_isRefusedBothWays() async throws {
        let other = try NodeCertificateAuthority.generate()
        try await withPeerServer(try Self.ca.issueLeaf(ipAddress: "127.0.0.1")) { port, refusals in
            // A client of another cluster's CA: it does not trust the server either.
            let stranger = try NodeTLS(credentials: try other.issueLeaf(ipAddress: "127.0.0.5"))
            let result = await pull(port: port) { try stranger.prepareClient($0) }
            guard case .failure(let text) = result else {
                Issue.record("served a peer of another CA")
                return
            }
            print("mTLS refusal, another CA — the puller sees: \(text)")
            #expect(text.contains("CERTIFICATE_VERIFY_FAILED"))
            // A client that trusts our CA but presents another CA's certificate: the server refuses it.
            let forged = try other.issueLeaf(ipAddress: "127.0.0.5")
            let forgedClient = try NodeTLS(
                credentials: NodeCredentials(
                    caCertificatePEM: Self.ca.certificatePEM,
                    certificatePEM: forged.certificatePEM,
                    privateKeyPEM: forged.privateKeyPEM
                )
            )
            let second = await pull(port: port) { try forgedClient.prepareClient($0) }
            guard case .failure(let forgedText) = second else {
                Issue.record("served a certificate of another CA")
                return
            }
            print("mTLS refusal, client certificate of another CA — the puller sees: \(forgedText)")
            #expect(forgedText.contains("connection failed"))
            #expect(await eventuallyAsync { !refusals.all.isEmpty })
            print("mTLS refusal, client certificate of another CA — the server logs: \(refusals.all.last ?? "")")
        }
    }

    @Test func expiredCertificate_isRefused() async throws {
        let expired = try Self.ca.issueLeaf(ipAddress: "127.0.0.5", now: Date() - 7200, validity: 3600)
        try await withPeerServer(try Self.ca.issueLeaf(ipAddress: "127.0.0.1")) { port, refusals in
            let client = try NodeTLS(credentials: expired)
            let result = await pull(port: port) { try client.prepareClient($0) }
            guard case .failure(let text) = result else {
                Issue.record("served an expired certificate")
                return
            }
            print("mTLS refusal, expired client certificate — the puller sees: \(text)")
            #expect(await eventuallyAsync { !refusals.all.isEmpty })
            let logged = refusals.all.first ?? ""
            print("mTLS refusal, expired client certificate — the server logs: \(logged)")
            #expect(logged.contains("CERTIFICATE_VERIFY_FAILED") || logged.contains("expired"))
        }
        // An expired server certificate: the puller refuses the server.
        try await withPeerServer(try Self.ca.issueLeaf(ipAddress: "127.0.0.1", now: Date() - 7200, validity: 3600)) {
            port,
            _ in
            let client = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
            let result = await pull(port: port) { try client.prepareClient($0) }
            guard case .failure(let text) = result else {
                Issue.record("pulled from an expired server")
                return
            }
            print("mTLS refusal, expired server certificate — the puller sees: \(text)")
            #expect(text.contains("CERTIFICATE_VERIFY_FAILED"))
        }
    }

    @Test func serverCertificateForAnotherAddress_isRefused() async throws {
        // A node certificate made for 127.0.0.9 answering on 127.0.0.1 (a stale address, a stolen key).
        try await withPeerServer(try Self.ca.issueLeaf(ipAddress: "127.0.0.9")) { port, _ in
            let client = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.5"))
            let result = await pull(port: port) { try client.prepareClient($0) }
            guard case .failure(let text) = result else {
                Issue.record("pulled from a server whose certificate names another address")
                return
            }
            print("mTLS refusal, server certificate for another address — the puller sees: \(text)")
            #expect(text.contains("failedToValidateHostname"))
        }
    }

    @Test func badCASecret_isRefusedWithItsReason() throws {
        let other = try NodeCertificateAuthority.generate()
        #expect(throws: NodeTLSError("the CA key (tls.key) does not belong to the CA certificate (tls.crt)")) {
            try NodeCertificateAuthority(certificatePEM: Self.ca.certificatePEM, privateKeyPEM: other.privateKeyPEM)
        }
        let leaf = try Self.ca.issueLeaf(ipAddress: "10.0.0.1")
        #expect(throws: NodeTLSError("the CA certificate (tls.crt) is not a CA (no basicConstraints CA:TRUE)")) {
            try NodeCertificateAuthority(certificatePEM: leaf.certificatePEM, privateKeyPEM: leaf.privateKeyPEM)
        }
        #expect(throws: NodeTLSError.self) {
            try NodeCertificateAuthority(certificatePEM: "garbage", privateKeyPEM: other.privateKeyPEM)
        }
        #expect(
            throws: NodeTLSError(
                "POD_IP \"node-a\" is not an IPv4 or IPv6 address: the node certificate needs it as its SAN"
            )
        ) {
            try Self.ca.issueLeaf(ipAddress: "node-a")
        }
        // The generated CA is the original's shape: ed25519, a CA, O=ctrox.dev, C=CH; PKCS#8 key.
        #expect(Self.ca.privateKeyPEM.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(
            try NodeCertificateAuthority(certificatePEM: Self.ca.certificatePEM, privateKeyPEM: Self.ca.privateKeyPEM)
                .certificatePEM == Self.ca.certificatePEM
        )
    }

    @Test func refusedPeer_isLoggedByTheServingManager() async throws {
        let lines = CapturingLogHandler.Lines()
        let logger = Logger(label: "node-service") { _ in CapturingLogHandler(lines: lines) }
        let tls = try NodeTLS(credentials: try Self.ca.issueLeaf(ipAddress: "127.0.0.1"))
        var router = TTRPCRouter()
        router.registerServerStream(service: NodeAPI.service, method: NodeAPI.Method.pullImage.rawValue) { _, writer in
            try await writer.send(NodeAPI.Image(imageData: [1]).encoded())
        }
        var quiet = Logger(label: "peer-server")
        quiet.logLevel = .critical
        let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: quiet)
        let port = Refusals()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.run(
                    tcpHost: "127.0.0.1",
                    port: 0,
                    prepareConnection: { try tls.prepareServer($0, logger: logger) },
                    onListening: { address in port.port.withLock { $0 = address.port } }
                )
            }
            #expect(await eventuallyAsync { port.port.withLock { $0 } != nil })
            // A client certificate of another CA, from a client that trusts ours.
            let other = try NodeCertificateAuthority.generate().issueLeaf(ipAddress: "127.0.0.5")
            let forged = try NodeTLS(
                credentials: NodeCredentials(
                    caCertificatePEM: Self.ca.certificatePEM,
                    certificatePEM: other.certificatePEM,
                    privateKeyPEM: other.privateKeyPEM
                )
            )
            _ = await pull(port: port.port.withLock { $0 }!) { try forged.prepareClient($0) }
            #expect(await eventuallyAsync { lines.all.withLock { !$0.isEmpty } })
            let logged = lines.all.withLock { $0.first } ?? ""
            print("the serving manager logs: \(logged)")
            #expect(logged.hasPrefix("warning refused a peer of the node service"))
            #expect(logged.contains("peer=[IPv4]127.0.0.1/127.0.0.1:"))
            group.cancelAll()
        }
    }
}
