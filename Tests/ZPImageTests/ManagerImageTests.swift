// The manager IMAGE as the zeropod-node DaemonSet's main container (issue 13, item 4): a CRI
// container with the runc handler, in the node's network namespace, the run folder of the shims
// mounted; a shim's status service on that folder (ZPManagerTestKit: the real ttrpc server and wire
// messages) and the Kubernetes API double on loopback. /healthz and /metrics answer from the
// container, and the metrics carry the shim's container.
import Foundation
import Glibc
import KubeAPIDouble
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPManagerTestKit
import ZPTestSupport

/// `curl` of a loopback URL: the status code and the body, or nil when nothing answered.
func httpGet(_ url: String) async -> (status: Int, body: String)? {
    guard let r = try? await runOffThePool(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", url], timeout: 20),
        r.status == 0
    else { return nil }
    var lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    guard let code = lines.popLast().flatMap({ Int($0) }) else { return nil }
    return (code, lines.joined(separator: "\n"))
}

@Suite(
    .serialized,
    .enabled(if: imageTestsAvailable, "needs root, runc, CRIU, gcc, the CNI plugins, umoci and jq (make setup)")
)
struct ManagerImageTests {
    @Test func managerImage_asTheDaemonSetsContainer_servesHealthAndTheShimsMetrics() async throws {
        let manager = try await imageArchive("manager")
        let scratch = "/tmp/\(uniqueName("zpimgm"))"
        let runDirectory = scratch + "/run"
        try FileManager.default.createDirectory(atPath: runDirectory + "/s", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try Data("run-dir = \(runDirectory)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/node.conf"))

        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["token": "system:serviceaccount:zeropod-system:zeropod-node"]
        let double = try await KubeAPIDouble.start(settings: settings)
        let shim = FakeStatusShim()
        shim.set(
            StatusAPI.ContainerStatus(
                id: "c1",
                name: "app",
                podName: "web",
                podNamespace: "default",
                podUID: "u1",
                lifecyclePhase: .running,
                pid: 42
            )
        )
        try double.kubeconfig(token: "token").write(toFile: scratch + "/kubeconfig", atomically: true, encoding: .utf8)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                let (ready, continuation) = AsyncStream.makeStream(of: Void.self)
                group.addTask { try await shim.serve(at: runDirectory + "/s/fake.sock") { continuation.yield() } }
                for await _ in ready { break }
                try await withCRITestBed(flavor: .containerd2, tag: "imgmgr") { bed in
                    try bed.importImage(archive: manager.archive)
                    let port = freeLoopbackPort()
                    var pod = bed.pod(uniqueName("zeropod-node"), handler: CRITestBed.runcHandler)
                    pod.hostNetwork = true
                    var config = pod.containerConfig(
                        "manager",
                        image: manager.ref,
                        args: [
                            "-metrics-addr=127.0.0.1:\(port)", "-kubeconfig=\(scratch)/kubeconfig",
                            "-node-config=\(scratch)/node.conf",
                        ],
                        env: [("NODE_NAME", "node-a"), ("POD_IP", "127.0.0.1")],
                        mounts: [CRI.Mount(samePath: scratch)]
                    )
                    config.workingDir = "/"
                    let (podID, _) = try await bed.runPodSandbox(pod)
                    let id = try await bed.startContainer(config, in: podID, of: pod)
                    var health: (status: Int, body: String)?
                    let up = await eventuallyAsync(within: 60, every: 0.2) {
                        health = await httpGet("http://127.0.0.1:\(port)/healthz")
                        return health?.status == 200
                    }
                    let log = { containerLog(pod, config) }
                    try #require(up, "no /healthz from the manager container: \(String(describing: health))\n\(log())")
                    var metrics = ""
                    #expect(
                        await eventuallyAsync(within: 60, every: 0.2) {
                            metrics = await httpGet("http://127.0.0.1:\(port)/metrics")?.body ?? ""
                            return metrics.contains("zeropod_running") && metrics.contains(#"pod="web""#)
                        },
                        "the manager in its container does not export the shim's container:\n\(metrics)\n\(log())"
                    )
                    print(
                        "[zpimage] manager image: /healthz \(health?.status ?? 0); metrics:\n"
                            + metrics.split(separator: "\n").filter { $0.hasPrefix("zeropod_running") }.joined(
                                separator: "\n"
                            )
                    )
                    #expect(try await bed.client.containerStatus(id).state == .running)
                    try await bed.removePod(podID)
                }
                group.cancelAll()
            }
        } catch {
            await double.stop()
            throw error
        }
        await double.stop()
    }
}
