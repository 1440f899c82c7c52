import Foundation
import Yams

// A kubeconfig file (clientcmd `v1 Config`) read with Yams. Only what this client can honour is
// accepted; every other setting it knows of is refused with the field's path, so a kubeconfig never
// silently means something else here than it means to kubectl.

extension KubeConfiguration {
    /// Reads a kubeconfig file: the context `context` (default: `current-context`), its cluster
    /// (`server`, `certificate-authority`, `certificate-authority-data`, `insecure-skip-tls-verify`)
    /// and its user (`token`, `tokenFile`, `client-certificate(-data)`, `client-key(-data)`).
    /// Relative file names are relative to the kubeconfig's folder.
    ///
    /// Refused as not supported yet: `exec` and `auth-provider` plugins, `username`/`password`,
    /// impersonation (`as`, `as-groups`, …), `tls-server-name`, `proxy-url`.
    ///
    /// - Throws: ``KubeConfigError`` naming the file, the field and the reason.
    public static func kubeconfig(path: String, context: String? = nil) throws(KubeConfigError) -> KubeConfiguration {
        let bytes = try readFile(path, source: path, field: nil)
        let root: Yams.Node?
        do {
            root = try Yams.compose(yaml: String(decoding: bytes, as: UTF8.self))
        } catch {
            throw KubeConfigError(source: path, reason: "not YAML: \(error)")
        }
        guard let root else { throw KubeConfigError(source: path, reason: "the file is empty") }
        var reader = KubeconfigReader(file: path)
        return try reader.configuration(root: root, context: context)
    }

    /// The configuration a node daemon uses, in controller-runtime's order: the `kubeconfig` path if
    /// given, else the file named by `KUBECONFIG`, else the in-cluster configuration if
    /// `KUBERNETES_SERVICE_HOST` is set, else `$HOME/.kube/config`.
    ///
    /// - Throws: ``KubeConfigError`` from the source chosen (`KUBECONFIG` with several files is refused:
    ///   merging kubeconfigs is not supported yet).
    public static func resolve(
        kubeconfig: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(KubeConfigError) -> KubeConfiguration {
        if let kubeconfig, !kubeconfig.isEmpty { return try Self.kubeconfig(path: kubeconfig) }
        if let variable = environment["KUBECONFIG"], !variable.isEmpty {
            if variable.contains(":") {
                throw KubeConfigError(
                    source: "environment",
                    field: "KUBECONFIG",
                    reason: "names several files ('\(variable)'): merging kubeconfigs is not supported yet"
                )
            }
            return try Self.kubeconfig(path: variable)
        }
        if let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty {
            return try inCluster(environment: environment)
        }
        guard let home = environment["HOME"], !home.isEmpty else {
            throw KubeConfigError(
                source: "environment",
                field: "HOME",
                reason: "not set, and neither KUBECONFIG nor KUBERNETES_SERVICE_HOST is: no configuration to read"
            )
        }
        return try Self.kubeconfig(path: home + "/.kube/config")
    }
}

private struct KubeconfigReader {
    let file: String
    var directory: String { (file as NSString).deletingLastPathComponent }

    func fail(_ field: String?, _ reason: String) -> KubeConfigError {
        KubeConfigError(source: file, field: field, reason: reason)
    }

    func mapping(_ node: Yams.Node, _ field: String) throws(KubeConfigError) -> Yams.Node.Mapping {
        guard let mapping = node.mapping else { throw fail(field, "must be a mapping") }
        return mapping
    }

    func string(_ node: Yams.Node?, _ field: String) throws(KubeConfigError) -> String? {
        guard let node else { return nil }
        if case .scalar(let scalar) = node {
            if scalar.style == .plain, scalar.string == "null" || scalar.string == "~" || scalar.string.isEmpty {
                return nil
            }
            return scalar.string
        }
        throw fail(field, "must be a string")
    }

    func bool(_ node: Yams.Node?, _ field: String) throws(KubeConfigError) -> Bool {
        guard let node else { return false }
        guard let text = try string(node, field) else { return false }
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: throw fail(field, "must be true or false, not '\(text)'")
        }
    }

    /// Refuses keys that are not in `allowed`, naming the unsupported ones specifically.
    func checkKeys(
        _ mapping: Yams.Node.Mapping,
        _ field: String,
        allowed: Set<String>,
        unsupported: [String: String]
    ) throws(KubeConfigError) {
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            if allowed.contains(key) { continue }
            if let why = unsupported[key] {
                if case .scalar(let s) = value, s.string.isEmpty || s.string == "null" { continue }
                if let m = value.mapping, m.count == 0 { continue }
                if let s = value.sequence, s.count == 0 { continue }
                throw fail("\(field).\(key)", "not supported yet (\(why))")
            }
            throw fail("\(field).\(key)", "unknown field")
        }
    }

    /// The entry named `name` of a named list (`clusters`, `contexts`, `users`), with its index.
    func entry(
        _ root: Yams.Node.Mapping,
        list: String,
        inner: String,
        name: String,
        wantedBy: String
    ) throws(KubeConfigError) -> (Yams.Node.Mapping, String) {
        guard let listNode = root[list] else { throw fail(list, "missing (\(wantedBy) names '\(name)')") }
        guard let sequence = listNode.sequence else { throw fail(list, "must be a list") }
        for (index, item) in sequence.enumerated() {
            let itemField = "\(list)[\(index)]"
            let itemMapping = try mapping(item, itemField)
            guard try string(itemMapping["name"], "\(itemField).name") == name else { continue }
            try checkKeys(itemMapping, itemField, allowed: ["name", inner], unsupported: [:])
            guard let innerNode = itemMapping[inner] else { throw fail("\(itemField).\(inner)", "missing") }
            return (try mapping(innerNode, "\(itemField).\(inner)"), "\(itemField).\(inner)")
        }
        throw fail(list, "no entry named '\(name)' (\(wantedBy) names it)")
    }

    func path(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : directory + "/" + relative
    }

    func base64(_ text: String, _ field: String) throws(KubeConfigError) -> [UInt8] {
        let compact = text.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: compact) else { throw fail(field, "not valid base64") }
        return Array(data)
    }

    mutating func configuration(
        root node: Yams.Node,
        context wanted: String?
    ) throws(KubeConfigError)
        -> KubeConfiguration
    {
        let root = try mapping(node, "(document)")
        try checkKeys(
            root,
            "(document)",
            allowed: [
                "apiVersion", "kind", "clusters", "contexts", "users", "current-context", "preferences", "extensions",
            ],
            unsupported: [:]
        )
        if let kind = try string(root["kind"], "kind"), kind != "Config" {
            throw fail("kind", "must be Config, not '\(kind)'")
        }
        let contextName: String
        if let wanted {
            contextName = wanted
        } else {
            guard let current = try string(root["current-context"], "current-context") else {
                throw fail("current-context", "not set and no context was named")
            }
            contextName = current
        }
        let (context, contextField) = try entry(
            root,
            list: "contexts",
            inner: "context",
            name: contextName,
            wantedBy: "the context"
        )
        try checkKeys(
            context,
            contextField,
            allowed: ["cluster", "user", "namespace", "extensions"],
            unsupported: [:]
        )
        guard let clusterName = try string(context["cluster"], "\(contextField).cluster") else {
            throw fail("\(contextField).cluster", "missing")
        }
        let (cluster, clusterField) = try entry(
            root,
            list: "clusters",
            inner: "cluster",
            name: clusterName,
            wantedBy: "context '\(contextName)'"
        )
        try checkKeys(
            cluster,
            clusterField,
            allowed: [
                "server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                "disable-compression", "extensions",
            ],
            unsupported: [
                "tls-server-name": "the server name must match the server's address",
                "proxy-url": "no proxy support",
            ]
        )
        guard let server = try string(cluster["server"], "\(clusterField).server") else {
            throw fail("\(clusterField).server", "missing")
        }
        guard let url = URL(string: server), let scheme = url.scheme, scheme == "https" || scheme == "http",
            url.host != nil
        else {
            throw fail("\(clusterField).server", "'\(server)' is not an http(s) URL with a host")
        }
        let insecure = try bool(cluster["insecure-skip-tls-verify"], "\(clusterField).insecure-skip-tls-verify")
        var ca: [UInt8]?
        if let data = try string(cluster["certificate-authority-data"], "\(clusterField).certificate-authority-data") {
            let field = "\(clusterField).certificate-authority-data"
            ca = try base64(data, field)
            try validateCertificates(ca!, source: file, field: field)
        } else if let caFile = try string(cluster["certificate-authority"], "\(clusterField).certificate-authority") {
            let field = "\(clusterField).certificate-authority"
            ca = try readFile(path(caFile), source: file, field: field)
            try validateCertificates(ca!, source: file, field: field)
        }
        if insecure, ca != nil {
            throw fail(
                "\(clusterField).insecure-skip-tls-verify",
                "cannot be combined with a certificate authority (kubectl refuses this too)"
            )
        }

        var token: BearerToken?
        var clientCertificate: ClientCertificate?
        if let userName = try string(context["user"], "\(contextField).user") {
            let (user, userField) = try entry(
                root,
                list: "users",
                inner: "user",
                name: userName,
                wantedBy: "context '\(contextName)'"
            )
            try checkKeys(
                user,
                userField,
                allowed: [
                    "token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                    "client-key-data", "extensions",
                ],
                unsupported: [
                    "exec": "credential plugins", "auth-provider": "auth-provider plugins",
                    "username": "basic authentication", "password": "basic authentication",
                    "as": "impersonation", "as-uid": "impersonation", "as-groups": "impersonation",
                    "as-user-extra": "impersonation",
                ]
            )
            if let tokenFile = try string(user["tokenFile"], "\(userField).tokenFile") {
                let resolved = path(tokenFile)
                _ = try readFile(resolved, source: file, field: "\(userField).tokenFile")
                token = .file(path: resolved, rereadEvery: .seconds(60))
            } else if let value = try string(user["token"], "\(userField).token") {
                token = .value(value)
            }
            var certificate: [UInt8]?
            var key: [UInt8]?
            if let data = try string(user["client-certificate-data"], "\(userField).client-certificate-data") {
                certificate = try base64(data, "\(userField).client-certificate-data")
                try validateCertificates(certificate!, source: file, field: "\(userField).client-certificate-data")
            } else if let certFile = try string(user["client-certificate"], "\(userField).client-certificate") {
                certificate = try readFile(path(certFile), source: file, field: "\(userField).client-certificate")
                try validateCertificates(certificate!, source: file, field: "\(userField).client-certificate")
            }
            if let data = try string(user["client-key-data"], "\(userField).client-key-data") {
                key = try base64(data, "\(userField).client-key-data")
                try validatePrivateKey(key!, source: file, field: "\(userField).client-key-data")
            } else if let keyFile = try string(user["client-key"], "\(userField).client-key") {
                key = try readFile(path(keyFile), source: file, field: "\(userField).client-key")
                try validatePrivateKey(key!, source: file, field: "\(userField).client-key")
            }
            switch (certificate, key) {
            case (let certificate?, let key?):
                clientCertificate = ClientCertificate(certificatePEM: certificate, keyPEM: key)
            case (.some, nil):
                throw fail(userField, "client-certificate is set but client-key is not")
            case (nil, .some):
                throw fail(userField, "client-key is set but client-certificate is not")
            case (nil, nil):
                break
            }
        }
        let namespace = try string(context["namespace"], "\(contextField).namespace")
        return KubeConfiguration(
            server: server,
            token: token,
            clientCertificate: clientCertificate,
            certificateAuthorityPEM: ca,
            insecureSkipTLSVerify: insecure,
            namespace: namespace
        )
    }
}
