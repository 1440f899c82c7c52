// libFuzzer target: the shims' wire API as ZPAPI decodes it (scripts/fuzz.sh): containerd's task
// API requests and responses, the task event envelope, and zeropod's status and wake messages.
// Each is what a peer on the shim's task socket, containerd's events socket or a status socket
// can send.
//
// Invariants beyond "does not crash": a message that decodes re-encodes to bytes that decode again,
// with a stable encoding (and to an equal message where the type is Equatable).
import FuzzSupport
import ZPAPI
import ZPCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAPI(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // containerd.task.v2/v3 requests the shim decodes, and the responses its clients decode.
    checkRoundTrip(CreateTaskRequest.self, bytes)
    checkRoundTrip(ExecProcessRequest.self, bytes)
    checkRoundTrip(UpdateTaskRequest.self, bytes)
    checkRoundTripEqual(MountSpec.self, bytes)
    checkRoundTripEqual(TaskProcessRequest.self, bytes)
    checkRoundTripEqual(TaskIDRequest.self, bytes)
    checkRoundTripEqual(KillRequest.self, bytes)
    checkRoundTripEqual(CloseIORequest.self, bytes)
    checkRoundTripEqual(PidResponse.self, bytes)
    checkRoundTripEqual(DeleteResponse.self, bytes)
    checkRoundTripEqual(StateResponse.self, bytes)
    checkRoundTripEqual(PidsResponse.self, bytes)
    checkRoundTripEqual(WaitResponse.self, bytes)
    checkRoundTripEqual(StatsResponse.self, bytes)
    checkRoundTripEqual(ConnectResponse.self, bytes)
    checkRoundTripEqual(EmptyMessage.self, bytes)
    // The event envelope (containerd.services.events.ttrpc.v1 ForwardRequest).
    checkRoundTripEqual(EventForwardRequest.self, bytes)
    // zeropod.shim.v1.Shim: status, metrics, the status stream and Wake.
    checkRoundTripEqual(StatusAPI.ContainerRequest.self, bytes)
    checkRoundTripEqual(StatusAPI.SubscribeStatusRequest.self, bytes)
    checkRoundTripEqual(StatusAPI.ContainerStatus.self, bytes)
    checkRoundTripEqual(StatusAPI.Operation.self, bytes)
    checkRoundTripEqual(StatusAPI.StatusChange.self, bytes)
    // Doubles (histogram bounds and sums) may be NaN, which is never equal to itself: compare
    // the encodings only.
    checkRoundTrip(StatusAPI.Histogram.self, bytes)
    checkRoundTrip(StatusAPI.ContainerMetrics.self, bytes)
    checkRoundTripEqual(StatusAPI.ListContainersResponse.self, bytes)
    checkRoundTrip(StatusAPI.MetricsResponse.self, bytes)
    checkRoundTripEqual(StatusAPI.Empty.self, bytes)
    checkRoundTrip(StatusAPI.Event.self, bytes)
    checkRoundTripEqual(StatusAPI.WakeRequest.self, bytes)
    checkRoundTripEqual(StatusAPI.WakeResponse.self, bytes)
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzAPI_main` as `main`): libFuzzer's driver on ``fuzzAPI(_:_:)``.
@_cdecl("FuzzAPI_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzAPI($0, size) } ?? 0 }
}
