// Kubelet's probes, made as kubelet makes them: from the node's network namespace (this process's)
// to the pod IP, HTTP with kubelet's user agent, TCP connect-and-close.
import Foundation
import ZPTestSupport

/// Kubelet's HTTP and TCP probes (pkg/probe/http, pkg/probe/tcp).
public enum KubeletProbe {
    /// kubelet 1.36's probe user agent.
    public static let userAgent = "kube-probe/1.36"

    /// An HTTP GET as kubelet's prober sends it (HTTP/1.1, `Connection: close`, its user agent,
    /// `Accept: */*`) from this process's network namespace; returns the status code and the body.
    /// - Throws: ``LabError`` naming the step (connect, send, receive, parse) and errno.
    public static func http(
        ip: String,
        port: UInt16,
        path: String = "/",
        userAgent: String = userAgent,
        timeout: Int = 5
    )
        throws -> (status: Int, body: String)
    {
        let socket = try TestSocket.connect(fromNetns: nil, to: ip, port: port, timeout: timeout)
        let request =
            "GET \(path) HTTP/1.1\r\nHost: \(ip):\(port)\r\nUser-Agent: \(userAgent)\r\nAccept: */*\r\n"
            + "Connection: close\r\n\r\n"
        try socket.send(request)
        let answer = try socket.receiveAll()
        let text = String(decoding: answer, as: UTF8.self)
        guard let statusLine = text.split(separator: "\r\n").first,
            let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else {
            throw LabError("GET \(ip):\(port)\(path): no HTTP status line in \(answer.count) bytes: \(text.prefix(80))")
        }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }

    /// A TCP probe: connect, then close without sending.
    /// - Throws: ``LabError`` with errno when the connect fails.
    public static func tcp(ip: String, port: UInt16, timeout: Int = 5) throws {
        _ = try TestSocket.connect(fromNetns: nil, to: ip, port: port, timeout: timeout)
    }

    /// The grpcio venv that scripts/setup.sh makes (`$ZP_CACHE/grpcio`).
    public static let grpcioPython = TestPaths.cache + "/grpcio/bin/python"

    /// Whether the gRPC probe can run here (scripts/setup.sh installed grpcio).
    public static var grpcProbeAvailable: Bool { FileManager.default.isExecutableFile(atPath: grpcioPython) }

    /// Kubelet's gRPC probe (`grpc.health.v1.Health/Check` of `service` with kubelet's user agent)
    /// made with grpcio (gRPC C-core), which, like kubelet's grpc-go, waits for the server's
    /// SETTINGS before it sends the call (scripts/cri/grpc-probe.py). Returns the health status
    /// name (`SERVING`, `NOT_SERVING`, ...), or `ERROR <code> <details>` when the call failed.
    /// - Throws: ``LabError`` when the probe program cannot run.
    public static func grpc(
        ip: String,
        port: UInt16,
        service: String = "",
        userAgent: String = userAgent,
        timeout: Int = 5
    ) throws -> String {
        let target = ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
        let result = try run(
            [
                grpcioPython, TestPaths.packageRoot + "/scripts/cri/grpc-probe.py", "check", target, service, userAgent,
                "\(timeout)",
            ],
            timeout: timeout + 30
        )
        guard result.status == 0 || result.status == 2 else {
            throw LabError("grpc-probe.py exited \(result.status): \(result.stderr)")
        }
        return result.trimmed
    }
}
