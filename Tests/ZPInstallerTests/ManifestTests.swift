// config/: every overlay builds with kubectl kustomize (the cached kubectl 1.36) and every object
// passes kubernetes-validate (PyPI, bundled schemas, strict) for Kubernetes 1.36.
import Foundation
import Testing
import ZPTestSupport

let kubectl = TestPaths.cache + "/kubectl/usr/bin/kubectl"
let validator = TestPaths.cache + "/kubernetes-validate/bin/kubernetes-validate"
let configRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("config").path
let haveManifestTools =
    FileManager.default.isExecutableFile(atPath: kubectl)
    && FileManager.default.isExecutableFile(atPath: validator)

@Suite(.enabled(if: haveManifestTools, "needs the cached kubectl and kubernetes-validate (make setup)"))
struct ManifestTests {
    func build(_ overlay: String) throws -> String { try sh([kubectl, "kustomize", configRoot + "/" + overlay]) }

    @Test(arguments: ["base", "overlays/production", "overlays/k3s", "overlays/rke2", "overlays/uninstall"])
    func buildsAndValidates(_ overlay: String) throws {
        let yaml = try build(overlay)
        let file = "/tmp/zpmanifest-\(UUID().uuidString.prefix(8)).yaml"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try yaml.write(toFile: file, atomically: false, encoding: .utf8)
        let out = try sh([validator, "--strict", "-k", "1.36.0", file])
        let objects = yaml.components(separatedBy: "\n").filter { $0.hasPrefix("kind: ") }.count
        let passed = out.components(separatedBy: "\n").filter { $0.contains(" passed for resource ") }.count
        #expect(objects > 0 && passed == objects, "\(overlay): \(passed) of \(objects) objects passed:\n\(out)")
        #expect(yaml.contains("namespace: zeropod-system"))
    }

    @Test func base_runtimeClassDaemonSetAndLeastPrivilege() throws {
        let yaml = try build("base")
        #expect(
            yaml.contains(
                "kind: RuntimeClass\nmetadata:\n  name: zeropod\nscheduling:\n  nodeSelector:\n    zeropod.ctrox.dev/node: \"true\""
            )
        )
        #expect(yaml.contains("handler: zeropod"))
        #expect(
            yaml.contains("image: zeropod-swift/installer:dev") && yaml.contains("image: zeropod-swift/manager:dev")
        )
        #expect(yaml.contains("fieldPath: spec.nodeName") && yaml.contains("fieldPath: status.podIP"))
        #expect(yaml.contains("containerPort: 8080") && yaml.contains("containerPort: 8090"))
        #expect(yaml.contains("path: /healthz"), "the manager's liveness probe")
        // The installer asks containerd's socket for its version and runs no host binary (decision 0038).
        #expect(
            yaml.contains("- --containerd-address=/run/containerd/containerd.sock")
                && yaml.contains("- --no-runc-check")
        )
        #expect(
            yaml.contains("mountPath: /run/containerd") && yaml.contains("mountPath: /sys/fs/bpf")
                && yaml.contains("mountPath: /sys/fs/cgroup")
        )
        #expect(!yaml.contains("--containerd-binary") && !yaml.contains("host-bin"))
        // containerd < 1.7.1: the shim's link goes into the host's /usr/local/bin, mounted aside (decision 0023).
        #expect(
            yaml.contains("- --shim-link-dir=/host/usr/local/bin") && yaml.contains("mountPath: /host/usr/local/bin")
                && yaml.contains("path: /usr/local/bin")
        )
        // Only reads in the base: no write verb at all.
        for verb in ["create", "update", "patch", "delete"] {
            #expect(!yaml.contains("- \(verb)"), "base grants \(verb)")
        }
    }

    @Test func components_addTheirFlagAndOnlyTheirRules() throws {
        let production = try build("overlays/production")
        for flag in ["-status-labels", "-status-events", "-in-place-scaling"] {
            #expect(production.contains("- \(flag)"))
        }
        #expect(production.contains("pods/resize"))
        #expect(production.contains("kind: CustomResourceDefinition"))
        #expect(!production.contains("- delete"))
        let uninstall = try build("overlays/uninstall")
        #expect(uninstall.contains("- --uninstall"))
        #expect(!uninstall.contains("kind: RuntimeClass"))
        #expect(!uninstall.contains("zeropod-swift/manager"))
        let k3s = try build("overlays/k3s")
        #expect(k3s.contains("- --runtime=k3s") && k3s.contains("path: /var/lib/rancher/k3s/agent/etc/containerd"))
        #expect(
            k3s.contains("- --containerd-address=/run/k3s/containerd/containerd.sock")
                && k3s.contains("path: /run/k3s/containerd")
        )
        let rke2 = try build("overlays/rke2")
        #expect(rke2.contains("- --runtime=rke2") && rke2.contains("path: /var/lib/rancher/rke2/agent/etc/containerd"))
    }
}
