import SystemPackage
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What the shim reads from a bundle's OCI `config.json`.
struct BundleConfig {
    /// The spec's annotations.
    var annotations: [String: String]
    /// The network namespace the spec joins (`linux.namespaces[type=network].path`), if any.
    var networkNamespacePath: String?

    /// Reads `<bundle>/config.json`; a missing or unreadable file yields no annotations.
    init(bundle: String) {
        struct Namespace: Decodable {
            var type: String
            var path: String?
        }
        struct Linux: Decodable { var namespaces: [Namespace]? }
        struct Spec: Decodable {
            var annotations: [String: String]?
            var linux: Linux?
        }
        guard let bytes = try? Files.read(FilePath(bundle + "/config.json")),
            let spec = try? JSONDecoder().decode(Spec.self, from: Data(bytes))
        else {
            annotations = [:]
            return
        }
        annotations = spec.annotations ?? [:]
        networkNamespacePath = spec.linux?.namespaces?.first { $0.type == "network" }?.path.flatMap {
            $0.isEmpty ? nil : $0
        }
    }

    /// The shim group: one shim serves every container of a group (a pod). containerd's runc shim
    /// reads the same annotations.
    func groupID(default id: String) -> String {
        annotations["io.containerd.runc.v2.group"] ?? annotations["io.kubernetes.cri.sandbox-id"] ?? id
    }
}
