// The kubelet's side of the CRI: the RuntimeService calls kubelet makes, typed.
import ZPCore
import ZPGRPC

/// A CRI `runtime.v1.RuntimeService` client (the calls kubelet makes for a pod's life), over one
/// gRPC connection to containerd's socket.
public final class CRIClient: Sendable {
    private let grpc: GRPCUnaryClient
    private static let service = "/runtime.v1.RuntimeService/"

    /// Connects to containerd's gRPC socket (the CRI plugin serves on it).
    /// - Throws: when the socket does not accept.
    public init(socket: String) async throws {
        grpc = try await GRPCUnaryClient.connect(unixSocket: socket)
    }

    /// Closes the connection.
    public func close() async { await grpc.close() }

    private func call(
        _ method: String,
        timeout: Duration = .seconds(120),
        _ body: (inout ProtobufWriter) -> Void
    )
        async throws -> [UInt8]
    {
        var w = ProtobufWriter()
        body(&w)
        return try await grpc.call(Self.service + method, w.bytes, timeout: timeout)
    }

    /// `Version`: the runtime's name and version, e.g. ("containerd", "v1.6.20").
    /// - Throws: ``GRPCCallError``.
    public func version() async throws -> (runtimeName: String, runtimeVersion: String, apiVersion: String) {
        let bytes = try await call("Version") { $0.writeString(field: 1, "v1") }
        var r = ProtobufReader(bytes)
        var result = ("", "", "")
        while let f = try r.nextField() {
            switch f.number {
            case 2: result.0 = try f.string(in: "VersionResponse")
            case 3: result.1 = try f.string(in: "VersionResponse")
            case 4: result.2 = try f.string(in: "VersionResponse")
            default: continue
            }
        }
        return result
    }

    /// `RunPodSandbox` with `runtime_handler` `handler` (the RuntimeClass's handler); returns the
    /// sandbox id.
    /// - Throws: ``GRPCCallError``.
    public func runPodSandbox(_ config: CRI.PodSandboxConfig, handler: String) async throws -> String {
        let bytes = try await call("RunPodSandbox", timeout: .seconds(240)) {
            $0.writeMessage(field: 1) { config.encode(into: &$0) }
            $0.writeStringIfNotDefault(field: 2, handler)
        }
        return try decodeField(1, of: bytes, in: "RunPodSandboxResponse") { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// `PodSandboxStatus`.
    /// - Throws: ``GRPCCallError`` (NOT_FOUND once removed).
    public func podSandboxStatus(_ id: String) async throws -> CRI.PodSandboxStatus {
        let bytes = try await call("PodSandboxStatus") { $0.writeString(field: 1, id) }
        guard let status = try decodeField(1, of: bytes, in: "PodSandboxStatusResponse", CRI.PodSandboxStatus.init)
        else {
            throw GRPCCallError(method: "PodSandboxStatus", code: 2, message: "no status in the answer")
        }
        return status
    }

    /// `StopPodSandbox`: stops every container of the pod and tears down its network.
    /// - Throws: ``GRPCCallError``.
    public func stopPodSandbox(_ id: String) async throws {
        _ = try await call("StopPodSandbox", timeout: .seconds(240)) { $0.writeString(field: 1, id) }
    }

    /// `RemovePodSandbox`.
    /// - Throws: ``GRPCCallError``.
    public func removePodSandbox(_ id: String) async throws {
        _ = try await call("RemovePodSandbox", timeout: .seconds(240)) { $0.writeString(field: 1, id) }
    }

    /// `CreateContainer` in sandbox `podID` (kubelet sends the sandbox's config again); returns the
    /// container id.
    /// - Throws: ``GRPCCallError``.
    public func createContainer(
        podID: String,
        _ config: CRI.ContainerConfig,
        sandboxConfig: CRI.PodSandboxConfig
    ) async throws -> String {
        let bytes = try await call("CreateContainer", timeout: .seconds(240)) {
            $0.writeString(field: 1, podID)
            $0.writeMessage(field: 2) { config.encode(into: &$0) }
            $0.writeMessage(field: 3) { sandboxConfig.encode(into: &$0) }
        }
        return try decodeField(1, of: bytes, in: "CreateContainerResponse") { String(decoding: $0, as: UTF8.self) }
            ?? ""
    }

    /// `StartContainer`.
    /// - Throws: ``GRPCCallError``.
    public func startContainer(_ id: String) async throws {
        _ = try await call("StartContainer", timeout: .seconds(240)) { $0.writeString(field: 1, id) }
    }

    /// `ContainerStatus`.
    /// - Throws: ``GRPCCallError``.
    public func containerStatus(_ id: String) async throws -> CRI.ContainerStatus {
        let bytes = try await call("ContainerStatus") { $0.writeString(field: 1, id) }
        guard let status = try decodeField(1, of: bytes, in: "ContainerStatusResponse", CRI.ContainerStatus.init) else {
            throw GRPCCallError(method: "ContainerStatus", code: 2, message: "no status in the answer")
        }
        return status
    }

    /// `ListContainers`, filtered by pod sandbox when `podID` is given.
    /// - Throws: ``GRPCCallError``.
    public func listContainers(podID: String? = nil) async throws -> [CRI.Container] {
        let bytes = try await call("ListContainers") { w in
            if let podID { w.writeMessage(field: 1) { $0.writeString(field: 3, podID) } }
        }
        return try decodeRepeated(1, of: bytes, in: "ListContainersResponse", CRI.Container.init)
    }

    /// `ContainerStats`.
    /// - Throws: ``GRPCCallError``.
    public func containerStats(_ id: String) async throws -> CRI.ContainerStats? {
        let bytes = try await call("ContainerStats") { $0.writeString(field: 1, id) }
        return try decodeField(1, of: bytes, in: "ContainerStatsResponse", CRI.ContainerStats.init)
    }

    /// `ExecSync`: runs `command` in the container and waits (`timeout` seconds, 0: none).
    /// - Throws: ``GRPCCallError``.
    public func execSync(_ id: String, _ command: [String], timeout: Int64 = 0) async throws -> CRI.ExecSyncResult {
        let bytes = try await call("ExecSync", timeout: .seconds(timeout > 0 ? timeout + 60 : 240)) {
            $0.writeString(field: 1, id)
            for c in command { $0.writeString(field: 2, c) }
            $0.writeInt64IfNotDefault(field: 3, timeout)
        }
        return try CRI.ExecSyncResult(decoding: bytes)
    }

    /// `Exec`: asks for a streaming URL for `command` (`kubectl exec`); the caller connects to it.
    /// - Throws: ``GRPCCallError``.
    public func exec(
        _ id: String,
        _ command: [String],
        tty: Bool,
        stdin: Bool,
        stdout: Bool = true,
        stderr: Bool
    )
        async throws -> String
    {
        let bytes = try await call("Exec") {
            $0.writeString(field: 1, id)
            for c in command { $0.writeString(field: 2, c) }
            $0.writeBoolIfNotDefault(field: 3, tty)
            $0.writeBoolIfNotDefault(field: 4, stdin)
            $0.writeBoolIfNotDefault(field: 5, stdout)
            $0.writeBoolIfNotDefault(field: 6, stderr)
        }
        return try decodeField(1, of: bytes, in: "ExecResponse") { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// `Attach`: asks for a streaming URL attached to the container's init (`kubectl attach`); the
    /// caller connects to it as to an exec's. stdin needs a container created with `stdin`.
    /// - Throws: ``GRPCCallError``.
    public func attach(_ id: String, tty: Bool, stdin: Bool, stdout: Bool = true, stderr: Bool) async throws -> String {
        let bytes = try await call("Attach") {
            $0.writeString(field: 1, id)
            $0.writeBoolIfNotDefault(field: 2, stdin)
            $0.writeBoolIfNotDefault(field: 3, tty)
            $0.writeBoolIfNotDefault(field: 4, stdout)
            $0.writeBoolIfNotDefault(field: 5, stderr)
        }
        return try decodeField(1, of: bytes, in: "AttachResponse") { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// `ListContainerStats` (what `crictl stats` calls), filtered by container or pod.
    /// - Throws: ``GRPCCallError``.
    public func listContainerStats(id: String? = nil, podID: String? = nil) async throws -> [CRI.ContainerStats] {
        let bytes = try await call("ListContainerStats") { w in
            w.writeMessage(field: 1) { f in
                if let id { f.writeString(field: 1, id) }
                if let podID { f.writeString(field: 2, podID) }
            }
        }
        return try decodeRepeated(1, of: bytes, in: "ListContainerStatsResponse", CRI.ContainerStats.init)
    }

    /// `StopContainer` with a grace period of `timeout` seconds.
    /// - Throws: ``GRPCCallError``.
    public func stopContainer(_ id: String, timeout: Int64 = 30) async throws {
        _ = try await call("StopContainer", timeout: .seconds(timeout + 120)) {
            $0.writeString(field: 1, id)
            $0.writeInt64IfNotDefault(field: 2, timeout)
        }
    }

    /// `RemoveContainer`.
    /// - Throws: ``GRPCCallError``.
    public func removeContainer(_ id: String) async throws {
        _ = try await call("RemoveContainer", timeout: .seconds(240)) { $0.writeString(field: 1, id) }
    }
}
