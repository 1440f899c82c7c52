// libFuzzer target: the node settings parser, `NodeConfig(parsing:source:)` (scripts/fuzz.sh), on
// whatever a node.conf may hold, bad UTF-8 included (as the file reader repairs it).
//
// Invariants beyond "does not crash": accepted settings are within their limits (at most 64
// distinct probe sources, an absolute state-dir, a run-dir of at most 31 bytes) and render to a
// file that parses back to the same settings; a refusal names `node.conf:<line>` with a line that
// exists in the input.
import FuzzSupport
import ZPCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNodeSettings(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let config = try NodeConfig(parsing: text, source: "node.conf")
        precondition(
            Set(config.probeSourceAddresses.map { $0.unmappedV4 ?? $0 }).count <= NodeConfig.maximumProbeSourceAddresses
        )
        precondition(config.stateDirectory.hasPrefix("/") && config.runDirectory.hasPrefix("/"))
        precondition(config.runDirectory.utf8.count <= NodeLayout.maximumRunDirectoryLength)
        precondition(!config.criuPath.isEmpty && !config.runcPath.isEmpty)
        let again: NodeConfig
        do { again = try NodeConfig(parsing: config.rendered, source: "rendered") } catch {
            preconditionFailure("rendered settings do not parse: \(error)\n\(config.rendered)")
        }
        precondition(again == config, "rendered settings parse to different ones")
    } catch {
        guard let location = error.location, location.hasPrefix("node.conf:"),
            let line = Int(location.dropFirst("node.conf:".count))
        else { preconditionFailure("a refusal without its location: \(error)") }
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).count
        precondition(line >= 1 && line <= lines, "line \(line) of \(lines)")
        precondition(error.description.utf8.starts(with: (location + ": ").utf8), "\(error.description)")
    }
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzNodeSettings_main` as `main`): libFuzzer's driver on ``fuzzNodeSettings(_:_:)``.
@_cdecl("FuzzNodeSettings_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzNodeSettings($0, size) } ?? 0 }
}
