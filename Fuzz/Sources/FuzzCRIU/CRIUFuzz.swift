// libFuzzer target: the CRIU RPC messages (criu_req, criu_resp, criu_opts, notify, version,
// features), the stats-dump image CRIU writes next to a dump, and zeropod's own tmpfs copies file
// (zeropod-tmpfs.pb): everything ZPCheckpoint decodes from CRIU's socket or from an image folder
// that may be truncated or corrupted (scripts/fuzz.sh).
//
// Invariants beyond "does not crash": every message that decodes survives a round trip equal to
// itself with a stable encoding; a stats image either decodes or is refused with a reason naming it.
import FuzzSupport
import ZPCheckpoint
import ZPCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCRIU(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    checkRoundTripEqual(CRIUResponse.self, bytes)
    checkRoundTripEqual(CRIURequest.self, bytes)
    checkRoundTripEqual(CRIUOptions.self, bytes)
    checkRoundTripEqual(CRIUNotify.self, bytes)
    checkRoundTripEqual(CRIUVersion.self, bytes)
    checkRoundTripEqual(CRIUFeatures.self, bytes)
    checkRoundTripEqual(TmpfsSnapshots.self, bytes)
    checkRoundTripEqual(TmpfsSnapshot.self, bytes)
    if let version = try? CRIUVersion(decoding: bytes) { _ = version.description }
    do {
        let stats = try CRIUDumpStats(file: bytes, path: "stats-dump")
        _ = stats.description
    } catch {
        precondition(error.description.contains("stats-dump"), "the error names the file: \(error)")
    }
    if let stats = try? CRIUDumpStats(decodingEntry: bytes[...]) { _ = stats.description }
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzCRIU_main` as `main`): libFuzzer's driver on ``fuzzCRIU(_:_:)``.
@_cdecl("FuzzCRIU_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzCRIU($0, size) } ?? 0 }
}
