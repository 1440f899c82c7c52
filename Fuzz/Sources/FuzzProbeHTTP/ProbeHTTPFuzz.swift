// libFuzzer target: the activator's probe classifier on what a client sends first (scripts/fuzz.sh):
// the hand-written HTTP/1.x request-head parser, and anything else a connection may start with.
//
// Invariants beyond "does not crash": a final verdict never changes as more bytes arrive. The
// activator classifies again after every read and acts on the first final verdict, so the verdict
// of any prefix that is final must be the verdict of the whole input; otherwise the answer would
// depend on how TCP split the bytes. The first input byte picks the prefix length.
import FuzzSupport
import NIOCore
import ZPActivator

/// Checks the prefix invariant for `stream`, cut at `cut` bytes.
func checkPrefixStable(_ stream: [UInt8], cut: Int) {
    let whole = ProbeClassifier.classify(ByteBuffer(bytes: stream))
    let prefix = ProbeClassifier.classify(ByteBuffer(bytes: stream.prefix(cut)))
    if prefix != .needMoreData {
        precondition(prefix == whole, "verdict \(prefix) after \(cut) bytes, \(whole) after \(stream.count)")
    }
    if cut == 0 { precondition(prefix == .needMoreData, "an empty read is never a verdict") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProbeHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let stream = Array(bytes.dropFirst())
    checkPrefixStable(stream, cut: stream.isEmpty ? 0 : Int(bytes[0]) % (stream.count + 1))
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzProbeHTTP_main` as `main`): libFuzzer's driver on ``fuzzProbeHTTP(_:_:)``.
@_cdecl("FuzzProbeHTTP_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzProbeHTTP($0, size) } ?? 0 }
}
