// libFuzzer target: the incremental ttrpc frame decoder (scripts/fuzz.sh).
import FuzzSupport
import ZPCore

//
// The first input byte picks chunk sizes; the rest is the byte stream. Invariants:
// - feeding the stream in chunks yields the same frames (and the same error) as feeding it at once;
// - every frame re-encodes to exactly the bytes it was decoded from;
// - bytes left over are fewer than a whole frame and are reported by `bufferedByteCount`.

private enum Outcome: Equatable {
    case frames([TTRPCFrame], leftover: Int)
    case failed([TTRPCFrame], TTRPCFrameError)
}

private func decode(_ stream: ArraySlice<UInt8>, chunkSeed: UInt8) -> Outcome {
    var d = TTRPCFrameDecoder()
    var frames: [TTRPCFrame] = []
    var i = stream.startIndex
    var step = UInt(chunkSeed)
    repeat {
        // Chunk sizes 1 ... 64 cycling from the seed; 0 feeds everything at once.
        let n = chunkSeed == 0 ? stream.endIndex - i : min(stream.endIndex - i, Int(step % 64) + 1)
        step = step &* 31 &+ 7
        d.append(stream[i..<(i + n)])
        i += n
        do {
            while let f = try d.nextFrame() { frames.append(f) }
        } catch {
            return .failed(frames, error)
        }
    } while i < stream.endIndex
    return .frames(frames, leftover: d.bufferedByteCount)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTTRPCFrameDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let stream = bytes[1...]
    let chunked = decode(stream, chunkSeed: bytes[0])
    let whole = decode(stream, chunkSeed: 0)
    precondition(chunked == whole, "chunked decoding differs from decoding at once")
    let frames: [TTRPCFrame]
    switch whole {
    case .frames(let f, let leftover):
        frames = f
        precondition(leftover >= 0 && leftover < stream.count + 1, "leftover out of range")
    case .failed(let f, _):
        frames = f
    }
    var reencoded: [UInt8] = []
    for f in frames {
        guard let b = try? TTRPCFrameCodec.encode(f) else { preconditionFailure("decoded frame does not re-encode") }
        reencoded += b
    }
    precondition(reencoded[...] == stream.prefix(reencoded.count), "re-encoded frames differ from the input")
    if case .frames(_, let leftover) = whole {
        precondition(reencoded.count + leftover == stream.count, "bytes lost between frames")
    }
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzTTRPC_main` as `main`): libFuzzer's driver on ``fuzzTTRPCFrameDecoder(_:_:)``.
@_cdecl("FuzzTTRPC_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzTTRPCFrameDecoder($0, size) } ?? 0 }
}
