// libFuzzer target: the pod annotation parsers, `ContainerConfig(annotations:)` and the syntaxes
// behind it (Go durations and bools, ports-map, name lists, DNS labels) (scripts/fuzz.sh). A pod's
// author controls these values.
//
// The input is split at NUL bytes into entries; each entry's first byte picks the key (every key
// the shim reads, or an unknown one under the prefixes) and the rest is the value. Invariants
// beyond "does not crash": accepted settings are within their documented ranges; a refusal names
// one of the keys that was set, and its value.
import FuzzSupport
import ZPCore

private let keys: [String] =
    ZeropodAnnotation.allCases.map(\.rawValue) + ZeropodSwiftAnnotation.allCases.map(\.rawValue) + [
        CRIAnnotation.containerName, CRIAnnotation.containerType, CRIAnnotation.sandboxName,
        CRIAnnotation.sandboxNamespace,
        CRIAnnotation.sandboxUID, "zeropod.ctrox.dev/cpu-requests", "zeropod.ctrox.dev/scaledown", "zeropod-swift/wake",
    ]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAnnotations(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    var annotations: [String: String] = [:]
    for entry in bytes.split(separator: 0, omittingEmptySubsequences: true) {
        let key = keys[Int(entry[entry.startIndex]) % keys.count]
        annotations[key] = String(decoding: entry.dropFirst(), as: UTF8.self)
    }
    _ = ContainerConfig.unrecognizedKeys(in: annotations)
    for value in annotations.values {
        _ = try? GoDuration.parse(value)  // Go's syntax: negative values parse; ContainerConfig refuses them
        _ = GoBool.parse(value)
        _ = ContainerConfig.dnsLabelProblem(value)
    }
    do {
        let config = try ContainerConfig(annotations: annotations)
        if let d = config.scaleDownDuration { precondition(d > .zero, "scale-down \(d)") }
        precondition(config.ports.allSatisfy { $0 >= 1 }, "ports \(config.ports)")
        precondition((1...ContainerConfig.maximumProbeBufferSize).contains(config.probeBufferSize))
        precondition(config.connectTimeout > .zero && (config.proxyTimeout.map { $0 > .zero } ?? true))
        if let group = config.wakeGroup {
            precondition(ContainerConfig.dnsLabelProblem(group) == nil, "group \(group)")
        }
        for name in config.containerNames + config.migrate + [config.liveMigrate].compactMap({ $0 }) {
            precondition(
                !name.isEmpty && !name.contains(",") && !name.contains(";") && !name.contains("="),
                "name \(name)"
            )
        }
        let again = try ContainerConfig(annotations: annotations)
        precondition(again == config, "parsing is deterministic")
    } catch {
        precondition(
            annotations[error.key] == error.value,
            "the error names a key that was set with its value: \(error)"
        )
        precondition(error.description.hasPrefix(error.key + ": "), "\(error.description)")
    }
    if let value = annotations[ZeropodAnnotation.portsMap.rawValue],
        let entries = try? PortsMap.parse(value, key: ZeropodAnnotation.portsMap.rawValue)
    {
        precondition(entries.allSatisfy { !$0.name.isEmpty && !$0.ports.isEmpty && !$0.ports.contains(0) })
    }
    return 0
}

/// The executable's `main` (SwiftPM links `FuzzAnnotations_main` as `main`): libFuzzer's driver on ``fuzzAnnotations(_:_:)``.
@_cdecl("FuzzAnnotations_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runLibFuzzer(argc, argv) { data, size in data.map { fuzzAnnotations($0, size) } ?? 0 }
}
