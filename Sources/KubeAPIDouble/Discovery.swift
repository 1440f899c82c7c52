import ZPKube

/// The discovery documents kubectl reads before anything else: `/version`, `/api`, `/apis`,
/// `/api/v1`. Aggregated discovery (`apidiscovery.k8s.io/v2`) is not served: the double answers
/// plain `application/json`, and kubectl falls back to these legacy documents.
enum Discovery {
    static func version(_ version: KubeAPIDouble.ServerVersion) -> JSON {
        let minor: String
        switch version {
        case .v1_36: minor = "36"
        case .v1_31: minor = "31"
        }
        return [
            "major": "1", "minor": .string(minor), "gitVersion": .string("v1.\(minor).0-zeropod-double"),
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26.0", "compiler": "gc", "platform": "linux/amd64",
        ]
    }

    static func apiVersions() -> JSON {
        [
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"]],
        ]
    }

    static func apiGroupList(_ custom: [ResourceType] = []) -> JSON {
        var groups: [String: String] = [:]
        for type in custom { groups[type.group] = type.version }
        let entries: [JSON] = groups.keys.sorted().map { group in
            let version: JSON = [
                "groupVersion": .string("\(group)/\(groups[group]!)"), "version": .string(groups[group]!),
            ]
            return ["name": .string(group), "versions": [version], "preferredVersion": version]
        }
        return ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(entries)]
    }

    /// `/apis/<group>/<version>`: the custom resources of one group version.
    static func customResourceList(_ types: [ResourceType]) -> JSON {
        var resources: [JSON] = []
        for type in types {
            resources.append([
                "name": .string(type.plural), "singularName": .string(type.singular),
                "namespaced": .bool(type.namespaced),
                "kind": .string(type.kind),
                "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
                "shortNames": .array(type.shortNames.map(JSON.string)),
            ])
            if type.statusSubresource {
                resources.append([
                    "name": .string(type.plural + "/status"), "singularName": "", "namespaced": .bool(type.namespaced),
                    "kind": .string(type.kind), "verbs": ["get", "patch", "update"],
                ])
            }
        }
        return [
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": .string(types.first?.apiVersion ?? ""),
            "resources": .array(resources),
        ]
    }

    static func resourceList(_ version: KubeAPIDouble.ServerVersion) -> JSON {
        func resource(_ type: ResourceType, verbs: [String], subresource: String? = nil) -> JSON {
            var entry: JSON = [
                "name": .string(type.plural + (subresource.map { "/\($0)" } ?? "")),
                "singularName": .string(subresource == nil ? type.singular : ""), "namespaced": .bool(type.namespaced),
                "kind": .string(type.kind), "verbs": .array(verbs.map(JSON.string)),
            ]
            if subresource == nil {
                entry["shortNames"] = .array(type.shortNames.map(JSON.string))
                if type == .pods { entry["categories"] = ["all"] }
            }
            return entry
        }
        let objectVerbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        var resources: [JSON] = [
            resource(.events, verbs: objectVerbs),
            resource(.namespaces, verbs: objectVerbs),
            resource(.namespaces, verbs: ["get", "patch", "update"], subresource: "status"),
            resource(.nodes, verbs: objectVerbs),
            resource(.nodes, verbs: ["get", "patch", "update"], subresource: "status"),
            resource(.pods, verbs: objectVerbs),
        ]
        switch version {
        case .v1_36: resources.append(resource(.pods, verbs: ["get", "patch", "update"], subresource: "resize"))
        case .v1_31: break
        }
        resources.append(resource(.pods, verbs: ["get", "patch", "update"], subresource: "status"))
        return ["kind": "APIResourceList", "groupVersion": "v1", "resources": .array(resources)]
    }
}
