import Foundation
import Testing

@testable import ZPCore

// `zeropod-swift/wake-group` (docs/decisions/0011-wake-groups.md): parsed into
// `ContainerConfig.wakeGroup`, a DNS label, under our own prefix.

private let wakeGroupKey = "zeropod-swift/wake-group"

private func annotations(_ extra: [String: String]) -> [String: String] {
    var a = [CRIAnnotation.containerName: "web", CRIAnnotation.containerType: "container"]
    a.merge(extra) { $1 }
    return a
}

@Test func wakeGroup_absentOrEmpty_isNone() throws {
    #expect(try ContainerConfig(annotations: annotations([:])).wakeGroup == nil)
    #expect(try ContainerConfig(annotations: annotations([wakeGroupKey: ""])).wakeGroup == nil)
}

@Test(arguments: ["wordpress", "a", "0", "db-1", "a1-b2-c3", String(repeating: "x", count: 63)])
func wakeGroup_dnsLabel_isAccepted(_ name: String) throws {
    #expect(try ContainerConfig(annotations: annotations([wakeGroupKey: name])).wakeGroup == name)
}

/// One refused group name and the reason the error must give.
struct BadGroupName: Sendable, CustomTestStringConvertible {
    var value: String
    var detail: String
    var testDescription: String { "\"\(value)\"" }
}

@Test(arguments: [
    BadGroupName(value: "WordPress", detail: #"contains "W" at position 1: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "word press", detail: #"contains " " at position 5: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "wp.db", detail: #"contains "." at position 3: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "wp/db", detail: #"contains "/" at position 3: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "wp_db", detail: #"contains "_" at position 3: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "café", detail: #"contains "é" at position 4: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "wp\n", detail: #"contains "\n" at position 3: only a-z, 0-9 and - are allowed"#),
    BadGroupName(value: "-wp", detail: #"starts with "-""#),
    BadGroupName(value: "wp-", detail: #"ends with "-""#),
    BadGroupName(value: "-", detail: #"starts with "-""#),
    BadGroupName(value: String(repeating: "a", count: 64), detail: "is 64 bytes long, longer than 63"),
])
func wakeGroup_notADNSLabel_failsNamingKeyValueAndReason(_ c: BadGroupName) {
    let expected = ConfigError(key: wakeGroupKey, value: c.value, reason: .invalidGroupName(c.detail))
    #expect(throws: expected) { try ContainerConfig(annotations: annotations([wakeGroupKey: c.value])) }
    let quotedValue = c.value.replacingOccurrences(of: "\n", with: "\\n")
    #expect(expected.description == "zeropod-swift/wake-group: invalid group name \"\(quotedValue)\": \(c.detail)")
}

@Test func wakeGroup_isCheckedAfterTheOriginalsKeys() {
    let a = annotations(["zeropod.ctrox.dev/pre-dump": "yes", wakeGroupKey: "Bad"])
    #expect(throws: ConfigError(key: "zeropod.ctrox.dev/pre-dump", value: "yes", reason: .invalidBoolean)) {
        try ContainerConfig(annotations: a)
    }
}

@Test func ourPrefix_isNotTheOriginals_andTyposUnderItAreReported() {
    #expect(
        ZeropodSwiftAnnotation.allCases.map(\.rawValue)
            == [
                "zeropod-swift/wake-group", "zeropod-swift/keep-connections", "zeropod-swift/listener-handover",
                "zeropod-swift/speaks-first-ports",
            ]
    )
    #expect(ZeropodSwiftAnnotation.allCases.allSatisfy { !$0.rawValue.hasPrefix(ZeropodAnnotation.prefix) })
    let keys = ContainerConfig.unrecognizedKeys(
        in: annotations([
            wakeGroupKey: "wp", "zeropod-swift/wake-grup": "wp", "zeropod-swiftx/wake-group": "wp",
        ])
    )
    #expect(keys == ["zeropod-swift/wake-grup"])
}

@Test func docs_describeEveryZeropodSwiftAnnotation() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("docs/configuration.md")
    let text = try String(contentsOf: url, encoding: .utf8)
    for key in ZeropodSwiftAnnotation.allCases {
        #expect(text.contains("| `\(key.rawValue)` |"), "docs/configuration.md has no table row for \(key.rawValue)")
    }
}
