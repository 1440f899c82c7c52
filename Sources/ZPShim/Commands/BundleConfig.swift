import Foundation

/// What the shim reads from a bundle's OCI `config.json`.
struct BundleConfig {
    /// The spec's annotations.
    var annotations: [String: String]

    /// Reads `<bundle>/config.json`; a missing or unreadable file yields no annotations.
    init(bundle: String) {
        guard let bytes = Sys.readFile(bundle + "/config.json"),
              let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              let annotations = object["annotations"] as? [String: Any] else {
            annotations = [:]
            return
        }
        self.annotations = annotations.compactMapValues { $0 as? String }
    }

    /// The shim group: one shim serves every container of a group (a pod). containerd's runc shim
    /// reads the same annotations.
    func groupID(default id: String) -> String {
        annotations["io.containerd.runc.v2.group"] ?? annotations["io.kubernetes.cri.sandbox-id"] ?? id
    }
}
