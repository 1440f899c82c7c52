import Foundation
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPCRITestBed

/// The hand-written CRI requests against `protoc --encode` on Fixtures/cri_subset.proto (the
/// upstream field numbers): what kubelet's sandbox and container configs become on the wire.
@Suite(.enabled(if: Privileges.hasTool("protoc"), "needs protoc (scripts/setup.sh installs protobuf-compiler)"))
struct CRIMessageGoldenTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        .path

    /// `protoc --encode=runtime.v1.<message>` of the text-format `text`.
    static func protoc(_ message: String, _ text: String) throws -> [UInt8] {
        try run(
            ["protoc", "--encode=runtime.v1.\(message)", "-I", fixtures, "cri_subset.proto"],
            input: Array(text.utf8)
        ).checked().output
    }

    static var pod: KubeletPod {
        var pod = KubeletPod(
            name: "web",
            handler: "zeropod",
            labels: ["app": "web"],
            annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s"],
            qosCgroup: "/kubepods/besteffort",
            containerPorts: [8080]
        )
        pod.uid = "u-1"
        return pod
    }

    @Test func sandboxConfig_asKubeletSendsIt_matchesProtoc() throws {
        var writer = ProtobufWriter()
        Self.pod.sandboxConfig.encode(into: &writer)
        let golden = try Self.protoc(
            "PodSandboxConfig",
            """
            metadata { name: "web" uid: "u-1" namespace: "default" }
            hostname: "web"
            log_directory: "/var/log/pods/default_web_u-1"
            dns_config {
              servers: "10.96.0.10"
              searches: "default.svc.cluster.local" searches: "svc.cluster.local" searches: "cluster.local"
              options: "ndots:5"
            }
            port_mappings { container_port: 8080 }
            labels { key: "app" value: "web" }
            labels { key: "io.kubernetes.pod.name" value: "web" }
            labels { key: "io.kubernetes.pod.namespace" value: "default" }
            labels { key: "io.kubernetes.pod.uid" value: "u-1" }
            annotations { key: "kubernetes.io/config.seen" value: "2026-12-06T00:00:00.000000000Z" }
            annotations { key: "kubernetes.io/config.source" value: "api" }
            annotations { key: "zeropod.ctrox.dev/scaledown-duration" value: "2s" }
            linux {
              cgroup_parent: "/kubepods/besteffort/podu-1"
              security_context { namespace_options { pid: 1 } seccomp { profile_type: 1 } }
            }
            """
        )
        #expect(writer.bytes == golden)
    }

    @Test func containerConfig_asKubeletSendsIt_matchesProtoc() throws {
        var config = Self.pod.containerConfig(
            "app",
            image: "zeropod-swift.test/busybox:1",
            command: ["/bin/sh", "-c", "echo hi"],
            env: [("A", "1")]
        )
        config.maskedPaths = ["/proc/kcore"]
        config.readonlyPaths = ["/proc/sys"]
        var writer = ProtobufWriter()
        config.encode(into: &writer)
        let golden = try Self.protoc(
            "ContainerConfig",
            """
            metadata { name: "app" }
            image { image: "zeropod-swift.test/busybox:1" user_specified_image: "zeropod-swift.test/busybox:1" }
            command: "/bin/sh" command: "-c" command: "echo hi"
            envs { key: "A" value: "1" }
            envs { key: "KUBERNETES_SERVICE_HOST" value: "10.96.0.1" }
            envs { key: "KUBERNETES_SERVICE_PORT" value: "443" }
            labels { key: "io.kubernetes.container.name" value: "app" }
            labels { key: "io.kubernetes.pod.name" value: "web" }
            labels { key: "io.kubernetes.pod.namespace" value: "default" }
            labels { key: "io.kubernetes.pod.uid" value: "u-1" }
            annotations { key: "io.kubernetes.container.hash" value: "1f6a832c" }
            annotations { key: "io.kubernetes.container.restartCount" value: "0" }
            annotations { key: "io.kubernetes.container.terminationMessagePath" value: "/dev/termination-log" }
            annotations { key: "io.kubernetes.container.terminationMessagePolicy" value: "File" }
            annotations { key: "io.kubernetes.pod.terminationGracePeriod" value: "30" }
            log_path: "app/0.log"
            linux {
              resources { cpu_period: 100000 cpu_shares: 2 oom_score_adj: 1000 }
              security_context {
                namespace_options { pid: 1 }
                masked_paths: "/proc/kcore"
                readonly_paths: "/proc/sys"
                seccomp { profile_type: 1 }
              }
            }
            """
        )
        #expect(writer.bytes == golden)
    }
}
