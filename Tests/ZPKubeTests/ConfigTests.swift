import Foundation
import KubeAPIDouble
import Testing
import ZPKube
import ZPTestSupport

/// Kubeconfig and in-cluster configuration: good files work against the double, bad ones are
/// refused naming the file, the field and the reason.
@Suite struct ConfigTests {
    @Test func kubeconfig_withTokenFileAndCAFile_worksAgainstTheDouble() async throws {
        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["from-file": "sa"]
        let double = try await KubeAPIDouble.start(settings: settings)
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        _ = try folder.write("token", "from-file\n")
        _ = try folder.write("ca.crt", double.certificateAuthority.certificatePEM)
        let path = try folder.write(
            "config",
            """
            apiVersion: v1
            kind: Config
            current-context: dev
            preferences: {}
            clusters:
            - name: c
              cluster:
                server: \(double.url)
                certificate-authority: ca.crt
            contexts:
            - name: dev
              context: {cluster: c, user: u, namespace: apps}
            users:
            - name: u
              user:
                tokenFile: token
            """
        )
        let configuration = try KubeConfiguration.kubeconfig(path: path)
        #expect(configuration.server == double.url)
        #expect(configuration.namespace == "apps")
        #expect(configuration.token == .file(path: folder.path + "/token", rereadEvery: .seconds(60)))
        let client = try KubeClient(configuration: configuration)
        let result = await kubeError { _ = try await client.list(Pod.self, .pods) }
        try await client.shutdown()
        await double.stop()
        #expect(result == nil)
        #expect(double.requests.last?.user == "sa")
    }

    @Test func kubeconfig_fromTheDouble_andClientCertificateData() async throws {
        let double = try await KubeAPIDouble.start()
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let (certificate, key) = try double.certificateAuthority.issue(commonName: "alice", server: false)
        let ca = Data(double.certificateAuthority.certificatePEM.utf8).base64EncodedString()
        let path = try folder.write(
            "config",
            """
            apiVersion: v1
            kind: Config
            current-context: other
            clusters:
            - {name: c, cluster: {server: "\(double.url)", certificate-authority-data: \(ca)}}
            contexts:
            - {name: other, context: {cluster: c, user: cert}}
            - {name: unused, context: {cluster: missing, user: cert}}
            users:
            - name: cert
              user:
                client-certificate-data: \(Data(certificate.utf8).base64EncodedString())
                client-key-data: \(Data(key.utf8).base64EncodedString())
            """
        )
        let configuration = try KubeConfiguration.kubeconfig(path: path)
        #expect(configuration.clientCertificate != nil)
        #expect(configuration.namespace == nil)
        let client = try KubeClient(configuration: configuration)
        let result = await kubeError { _ = try await client.list(Pod.self, .pods) }
        try await client.shutdown()
        await double.stop()
        #expect(result == nil)
        #expect(double.requests.last?.user == "alice")
        #expect(throws: KubeConfigError.self) { try KubeConfiguration.kubeconfig(path: path, context: "unused") }
    }

    /// Each bad kubeconfig and the error it must produce (field and a part of the reason).
    static let badFiles: [(String, String?, String)] = [
        ("not: [yaml", nil, "not YAML"),
        ("", nil, "empty"),
        ("kind: Config\nclusters: []\ncontexts: []\nusers: []\n", "current-context", "not set"),
        ("current-context: x\ncontexts: []\n", "contexts", "no entry named 'x'"),
        ("current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n", "clusters", "missing"),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'ftp://h'}\n",
            "clusters[0].cluster.server", "not an http(s) URL"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'https://h', certificate-authority-data: '%%%'}\n",
            "clusters[0].cluster.certificate-authority-data", "not valid base64"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'https://h', certificate-authority-data: 'aGVsbG8='}\n",
            "clusters[0].cluster.certificate-authority-data", "PEM certificate"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'https://h', certificate-authority: /nonexistent/ca.crt}\n",
            "clusters[0].cluster.certificate-authority", "does not exist"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'https://h', tls-server-name: api}\n",
            "clusters[0].cluster.tls-server-name", "not supported yet"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {exec: {command: aws}}\n",
            "users[0].user.exec", "not supported yet (credential plugins)"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {token-file: /t}\n",
            "users[0].user.token-file", "unknown field"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {tokenFile: /nonexistent/token}\n",
            "users[0].user.tokenFile", "does not exist"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user: {client-key-data: 'aGVsbG8='}\n",
            "users[0].user.client-key-data", "not a PEM private key"
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: 'https://h', insecure-skip-tls-verify: maybe}\n",
            "clusters[0].cluster.insecure-skip-tls-verify", "must be true or false"
        ),
    ]

    @Test(arguments: 0..<badFiles.count)
    func badKubeconfig_isRefusedWithFieldAndReason(index: Int) throws {
        let (text, field, reason) = ConfigTests.badFiles[index]
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let path = try folder.write("config", text)
        let error = #expect(throws: KubeConfigError.self) { try KubeConfiguration.kubeconfig(path: path) }
        #expect(error?.source == path)
        #expect(error?.field == field)
        #expect(error?.reason.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func missingKubeconfig_namesTheFile() {
        let error = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.kubeconfig(path: "/nonexistent/kubeconfig")
        }
        #expect(error?.description == "/nonexistent/kubeconfig: /nonexistent/kubeconfig does not exist")
    }

    @Test func inCluster_readsTheServiceAccount() throws {
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let authority = try TestCertificateAuthority()
        _ = try folder.write("token", "sa-token")
        _ = try folder.write("ca.crt", authority.certificatePEM)
        _ = try folder.write("namespace", "zeropod-system\n")
        let configuration = try KubeConfiguration.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"],
            serviceAccountDirectory: folder.path
        )
        #expect(configuration.server == "https://10.96.0.1:443")
        #expect(configuration.namespace == "zeropod-system")
        #expect(configuration.token == .file(path: folder.path + "/token", rereadEvery: .seconds(60)))
        #expect(configuration.certificateAuthorityPEM == Array(authority.certificatePEM.utf8))
        let v6 = try KubeConfiguration.inCluster(
            environment: ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"],
            serviceAccountDirectory: folder.path
        )
        #expect(v6.server == "https://[fd00::1]:6443")

        let noHost = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.inCluster(environment: [:], serviceAccountDirectory: folder.path)
        }
        #expect(noHost?.field == "KUBERNETES_SERVICE_HOST")
        let badPort = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "https"],
                serviceAccountDirectory: folder.path
            )
        }
        #expect(badPort?.reason == "'https' is not a port number")
        _ = try folder.write("token", "  \n")
        let empty = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"],
                serviceAccountDirectory: folder.path
            )
        }
        #expect(empty?.source == folder.path + "/token")
        let none = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"],
                serviceAccountDirectory: folder.path + "/missing"
            )
        }
        #expect(none?.reason.contains("does not exist") == true)
    }

    @Test func resolve_followsControllerRuntimesOrder() throws {
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let several = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.resolve(environment: ["KUBECONFIG": "/a:/b"])
        }
        #expect(several?.reason.contains("merging kubeconfigs is not supported yet") == true)
        let home = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.resolve(environment: ["HOME": folder.path])
        }
        #expect(home?.source == folder.path + "/.kube/config")
        let flag = #expect(throws: KubeConfigError.self) {
            try KubeConfiguration.resolve(kubeconfig: "/flag/config", environment: ["KUBECONFIG": "/env/config"])
        }
        #expect(flag?.source == "/flag/config")
    }
}
