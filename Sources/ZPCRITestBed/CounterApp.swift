// The scale-down workload of the CRI suites outside ZPCRITests (the image tests): a counter kept
// in a shell's memory, so a restore that loses the memory shows.
import Foundation
import ZPTestSupport

/// A shell loop that keeps a request counter in its own memory and serves it over HTTP with busybox
/// nc on port 8080 (the busybox image): the count goes on after a checkpoint and restore only if
/// the memory came back.
public enum CounterApp {
    /// The `sh -c` script.
    public static let script = """
        n=0; while true; do n=$((n+1)); \
        printf 'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\ncount=%d\\n' $((7+${#n})) $n | nc -l -p 8080 >/dev/null; done
        """

    /// The count in an answer, or nil.
    public static func count(in body: String?) -> Int? {
        body.flatMap {
            $0.split(separator: "=").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    /// A plain GET from the node (not a probe: another user agent); the count it answered, or nil.
    /// Retried for up to 10 s while the connection fails (between two answers nc does not listen).
    public static func request(_ ip: String) async -> Int? {
        var body: String?
        _ = await eventuallyAsync(within: 10) {
            body = try? await onThread {
                try KubeletProbe.http(ip: ip, port: 8080, userAgent: "zpcri-client/1", timeout: 20).body
            }
            return body != nil
        }
        return count(in: body)
    }

    /// Kubelet's steps for a one-container pod running the counter (RunPodSandbox, CreateContainer,
    /// StartContainer), then requests until it answers (60 s).
    /// - Returns: the sandbox id, the pod IP, the container id and the first count.
    /// - Throws: ``GRPCCallError`` from the CRI, ``LabError`` when the app never answers.
    public static func start(
        _ bed: CRITestBed,
        _ pod: KubeletPod
    ) async throws -> (podID: String, ip: String, appID: String, count: Int) {
        let (podID, ip) = try await bed.runPodSandbox(pod)
        let appID = try await bed.startContainer(
            pod.containerConfig("app", image: bed.busyboxImage, command: ["/bin/sh", "-c", script]),
            in: podID,
            of: pod
        )
        var count = 0
        _ = await eventuallyAsync(within: 60) {
            count = await request(ip) ?? 0
            return count > 0
        }
        guard count > 0 else {
            throw LabError("the app of \(pod.name) never answered at \(ip):8080; log: \(bed.containerd.log(tail: 30))")
        }
        return (podID, ip, appID, count)
    }
}
