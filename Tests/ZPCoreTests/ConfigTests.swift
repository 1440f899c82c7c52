import Foundation
import Testing

@testable import ZPCore

// MARK: - container annotations

private let scaledown = "zeropod.ctrox.dev/scaledown-duration"
private let names = "zeropod.ctrox.dev/container-names"
private let portsMap = "zeropod.ctrox.dev/ports-map"

/// Annotations of app container `web` in a pod, plus `extra`.
private func spec(_ extra: [String: String]) -> [String: String] {
    var a = [
        CRIAnnotation.containerName: "web", CRIAnnotation.containerType: "container",
        CRIAnnotation.sandboxName: "pod-1", CRIAnnotation.sandboxNamespace: "ns-1",
        CRIAnnotation.sandboxUID: "uid-1",
    ]
    a.merge(extra) { $1 }
    return a
}

@Test func containerConfig_defaults() throws {
    let c = try ContainerConfig(annotations: spec([:]))
    #expect(c.containerName == "web")
    #expect(c.containerType == .container)
    #expect(c.podName == "pod-1" && c.podNamespace == "ns-1" && c.podUID == "uid-1")
    #expect(c.scaleDownDuration == .seconds(60))
    #expect(c.scaleDownEnabled)
    #expect(c.containerNames.isEmpty)
    #expect(c.ports.isEmpty)
    #expect(!c.disableCheckpointing && !c.preDump && !c.disableProbeDetection && !c.disableMigrateData)
    #expect(!c.dryRun)
    #expect(c.probeBufferSize == 1024)
    #expect(c.connectTimeout == .seconds(5) && c.proxyTimeout == nil)
    #expect(c.migrate.isEmpty && c.liveMigrate == nil)
    #expect(c.isManaged)
    #expect(!c.anyMigrationEnabled)
}

/// One accepted input: annotations and a check of the parsed value.
struct GoodCase: Sendable, CustomTestStringConvertible {
    var annotations: [String: String]
    var check: @Sendable (ContainerConfig) -> Bool
    var testDescription: String { annotations.filter { $0.key.hasPrefix("zeropod") }.description }
}

private let goodCases: [GoodCase] = [
    GoodCase(annotations: [scaledown: "10s"]) { $0.scaleDownDuration == .seconds(10) },
    GoodCase(annotations: [scaledown: "1m30s"]) { $0.scaleDownDuration == .seconds(90) },
    GoodCase(annotations: [scaledown: "1h"]) { $0.scaleDownDuration == .seconds(3600) },
    GoodCase(annotations: [scaledown: "500ms"]) { $0.scaleDownDuration == .milliseconds(500) },
    GoodCase(annotations: [scaledown: "1.5h"]) { $0.scaleDownDuration == .seconds(5400) },
    GoodCase(annotations: [scaledown: ".5s"]) { $0.scaleDownDuration == .milliseconds(500) },
    GoodCase(annotations: [scaledown: "2h45m10s"]) { $0.scaleDownDuration == .seconds(9910) },
    GoodCase(annotations: [scaledown: "+3s"]) { $0.scaleDownDuration == .seconds(3) },
    GoodCase(annotations: [scaledown: "1500us"]) { $0.scaleDownDuration == .microseconds(1500) },
    GoodCase(annotations: [scaledown: "7µs"]) { $0.scaleDownDuration == .microseconds(7) },
    GoodCase(annotations: [scaledown: "7μs"]) { $0.scaleDownDuration == .microseconds(7) },
    GoodCase(annotations: [scaledown: "0"]) { $0.scaleDownDuration == nil && !$0.scaleDownEnabled },
    GoodCase(annotations: [scaledown: "0s"]) { $0.scaleDownDuration == nil },
    GoodCase(annotations: [scaledown: "0m"]) { $0.scaleDownDuration == nil },
    GoodCase(annotations: [scaledown: "-0"]) { $0.scaleDownDuration == nil },
    GoodCase(annotations: [scaledown: ""]) { $0.scaleDownDuration == .seconds(60) },
    GoodCase(annotations: [names: "web"]) { $0.containerNames == ["web"] && $0.isManaged },
    GoodCase(annotations: [names: "sidecar,web"]) { $0.containerNames == ["sidecar", "web"] && $0.isManaged },
    GoodCase(annotations: [names: "sidecar"]) { !$0.isManaged },
    GoodCase(annotations: [CRIAnnotation.containerType: "sandbox"]) { !$0.isManaged && $0.containerType == .sandbox },
    GoodCase(annotations: [CRIAnnotation.containerType: "sandbox", names: "web"]) { !$0.isManaged },
    GoodCase(annotations: [portsMap: "web=80"]) { $0.ports == [80] },
    GoodCase(annotations: [portsMap: "web=80,8080;other=9000"]) { $0.ports == [80, 8080] },
    GoodCase(annotations: [portsMap: "other=9000;web=65535"]) { $0.ports == [65535] },
    GoodCase(annotations: [portsMap: "web=80;other=1;web=443"]) { $0.ports == [80, 443] },
    GoodCase(annotations: [portsMap: "web=080"]) { $0.ports == [80] },
    GoodCase(annotations: [portsMap: "other=9000"]) { $0.ports.isEmpty },
    GoodCase(annotations: [portsMap: ""]) { $0.ports.isEmpty },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-checkpointing": "true"]) { $0.disableCheckpointing },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-checkpointing": "1"]) { $0.disableCheckpointing },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-checkpointing": "T"]) { $0.disableCheckpointing },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-checkpointing": "False"]) { !$0.disableCheckpointing },
    GoodCase(annotations: ["zeropod.ctrox.dev/pre-dump": "TRUE"]) { $0.preDump },
    GoodCase(annotations: ["zeropod.ctrox.dev/pre-dump": "f"]) { !$0.preDump },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-probe-detection": "True"]) { $0.disableProbeDetection },
    GoodCase(annotations: ["zeropod.ctrox.dev/disable-migrate-data": "t"]) { $0.disableMigrateData },
    GoodCase(annotations: ["zeropod.ctrox.dev/dry-run": "true"]) { $0.dryRun && $0.scaleDownEnabled },
    GoodCase(annotations: ["zeropod.ctrox.dev/dry-run": "1"]) { $0.dryRun },
    GoodCase(annotations: ["zeropod.ctrox.dev/dry-run": "False"]) { !$0.dryRun },
    GoodCase(annotations: ["zeropod.ctrox.dev/dry-run": ""]) { !$0.dryRun },
    // Every other setting is still parsed and checked: the dry run simulates them.
    GoodCase(annotations: ["zeropod.ctrox.dev/dry-run": "t", "zeropod.ctrox.dev/pre-dump": "t", scaledown: "30s"]) {
        $0.dryRun && $0.preDump && $0.scaleDownDuration == .seconds(30)
    },
    GoodCase(annotations: ["zeropod.ctrox.dev/probe-buffer-size": "4096"]) { $0.probeBufferSize == 4096 },
    GoodCase(annotations: ["zeropod.ctrox.dev/probe-buffer-size": "+1"]) { $0.probeBufferSize == 1 },
    GoodCase(annotations: ["zeropod.ctrox.dev/probe-buffer-size": "1048576"]) { $0.probeBufferSize == 1 << 20 },
    GoodCase(annotations: ["zeropod.ctrox.dev/connect-timeout": "250ms"]) { $0.connectTimeout == .milliseconds(250) },
    GoodCase(annotations: ["zeropod.ctrox.dev/connect-timeout": "0s"]) { $0.connectTimeout == .seconds(5) },
    GoodCase(annotations: ["zeropod.ctrox.dev/proxy-timeout": "1h"]) { $0.proxyTimeout == .seconds(3600) },
    GoodCase(annotations: ["zeropod.ctrox.dev/proxy-timeout": "0"]) { $0.proxyTimeout == nil },
    GoodCase(annotations: ["zeropod.ctrox.dev/migrate": "web,db"]) {
        $0.migrate == ["web", "db"] && $0.migrationEnabled
    },
    GoodCase(annotations: ["zeropod.ctrox.dev/migrate": "db"]) { !$0.migrationEnabled },
    GoodCase(annotations: ["zeropod.ctrox.dev/migrate": "web", "zeropod.ctrox.dev/disable-checkpointing": "true"]) {
        !$0.migrationEnabled && !$0.anyMigrationEnabled
    },
    GoodCase(annotations: ["zeropod.ctrox.dev/live-migrate": "web"]) {
        $0.liveMigrationEnabled && $0.anyMigrationEnabled
    },
    GoodCase(annotations: ["zeropod.ctrox.dev/live-migrate": "db"]) { !$0.liveMigrationEnabled },
    GoodCase(annotations: ["zeropod.ctrox.dev/unknown": "x", "zeropod.ctrox.dev/cpu-requests": "{}"]) { $0.isManaged },
]

@Test(arguments: goodCases)
func containerConfig_accepts(_ c: GoodCase) throws {
    let config = try ContainerConfig(annotations: spec(c.annotations))
    #expect(c.check(config), "\(config)")
}

@Test func containerConfig_withoutCRIAnnotations_isManagedUnlessNamed() throws {
    let plain = try ContainerConfig(annotations: [:])
    #expect(plain.containerType == .unspecified && plain.containerName == "" && plain.isManaged)
    // An empty live-migrate name never matches an unnamed container (the original matched).
    #expect(!plain.liveMigrationEnabled)
    let named = try ContainerConfig(annotations: [names: "web"])
    #expect(!named.isManaged)
    #expect(ContainerType(annotation: "podvm") == .other("podvm"))
}

/// One refused input and the exact text of its error.
struct BadCase: Sendable, CustomTestStringConvertible {
    var key: String
    var value: String
    var error: String
    var testDescription: String { "\(key)=\(value)" }
}

private let badCases: [BadCase] = [
    BadCase(
        key: scaledown,
        value: "5x",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "5x": unknown unit "x""#
    ),
    BadCase(
        key: scaledown,
        value: "5",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "5": missing unit (one of ns, us, ms, s, m, h)"#
    ),
    BadCase(
        key: scaledown,
        value: "1m30",
        error:
            #"zeropod.ctrox.dev/scaledown-duration: invalid duration "1m30": missing unit (one of ns, us, ms, s, m, h)"#
    ),
    BadCase(
        key: scaledown,
        value: "-1m",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "-1m": must not be negative"#
    ),
    BadCase(
        key: scaledown,
        value: "m",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "m": expected a number"#
    ),
    BadCase(
        key: scaledown,
        value: " 10s",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration " 10s": expected a number"#
    ),
    BadCase(
        key: scaledown,
        value: "10s ",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "10s ": unknown unit "s ""#
    ),
    BadCase(
        key: scaledown,
        value: "1M",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "1M": unknown unit "M""#
    ),
    BadCase(
        key: scaledown,
        value: "1d",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "1d": unknown unit "d""#
    ),
    BadCase(
        key: scaledown,
        value: ".s",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration ".s": expected a number"#
    ),
    BadCase(
        key: scaledown,
        value: "-",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "-": empty"#
    ),
    BadCase(
        key: scaledown,
        value: "3000000h",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "3000000h": out of range"#
    ),
    BadCase(
        key: scaledown,
        value: "9223372036854775808ns",
        error: #"zeropod.ctrox.dev/scaledown-duration: invalid duration "9223372036854775808ns": out of range"#
    ),
    BadCase(
        key: names,
        value: "web,,db",
        error: #"zeropod.ctrox.dev/container-names: invalid container name list "web,,db": name 2 "" is empty"#
    ),
    BadCase(
        key: names,
        value: "web, db",
        error:
            #"zeropod.ctrox.dev/container-names: invalid container name list "web, db": name 2 " db" contains white space or a control character"#
    ),
    BadCase(
        key: names,
        value: "web,",
        error: #"zeropod.ctrox.dev/container-names: invalid container name list "web,": name 2 "" is empty"#
    ),
    // Found by `make fuzz-long` (FuzzAnnotations): U+037E GREEK QUESTION MARK is canonically ";",
    // so a String comparison sees a separator the scalar check did not.
    BadCase(
        key: names,
        value: "web\u{37E}db",
        error: "zeropod.ctrox.dev/container-names: invalid container name list \"web\u{37E}db\": name 1 \"web\u{37E}db\" contains \";\""
    ),
    BadCase(
        key: portsMap,
        value: "web=80;",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web=80;": entry "" is not name=port[,port...]"#
    ),
    BadCase(
        key: portsMap,
        value: "web:80",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web:80": entry "web:80" is not name=port[,port...]"#
    ),
    BadCase(
        key: portsMap,
        value: "web=80=81",
        error:
            #"zeropod.ctrox.dev/ports-map: invalid ports map "web=80=81": entry "web=80=81" is not name=port[,port...]"#
    ),
    BadCase(
        key: portsMap,
        value: "=80",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "=80": container name "" in entry "=80" is empty"#
    ),
    BadCase(
        key: portsMap,
        value: "web=",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web=": port "" of "web" is not a decimal number"#
    ),
    BadCase(
        key: portsMap,
        value: "web=80,",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web=80,": port "" of "web" is not a decimal number"#
    ),
    BadCase(
        key: portsMap,
        value: "web=http",
        error:
            #"zeropod.ctrox.dev/ports-map: invalid ports map "web=http": port "http" of "web" is not a decimal number"#
    ),
    BadCase(
        key: portsMap,
        value: "web= 80",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web= 80": port " 80" of "web" is not a decimal number"#
    ),
    BadCase(
        key: portsMap,
        value: "web=-1",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web=-1": port "-1" of "web" is not a decimal number"#
    ),
    BadCase(
        key: portsMap,
        value: "web=65536",
        error:
            #"zeropod.ctrox.dev/ports-map: invalid ports map "web=65536": port "65536" of "web" is not between 1 and 65535"#
    ),
    BadCase(
        key: portsMap,
        value: "web=0",
        error: #"zeropod.ctrox.dev/ports-map: invalid ports map "web=0": port "0" of "web" is not between 1 and 65535"#
    ),
    BadCase(
        key: portsMap,
        value: "web=80;other=99999",
        error:
            #"zeropod.ctrox.dev/ports-map: invalid ports map "web=80;other=99999": port "99999" of "other" is not between 1 and 65535"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/disable-checkpointing",
        value: "yes",
        error:
            #"zeropod.ctrox.dev/disable-checkpointing: invalid boolean "yes": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/pre-dump",
        value: "tRUE",
        error:
            #"zeropod.ctrox.dev/pre-dump: invalid boolean "tRUE": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/disable-probe-detection",
        value: "true ",
        error:
            #"zeropod.ctrox.dev/disable-probe-detection: invalid boolean "true ": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/disable-migrate-data",
        value: "2",
        error:
            #"zeropod.ctrox.dev/disable-migrate-data: invalid boolean "2": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/dry-run",
        value: "yes",
        error:
            #"zeropod.ctrox.dev/dry-run: invalid boolean "yes": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/dry-run",
        value: " true",
        error:
            #"zeropod.ctrox.dev/dry-run: invalid boolean " true": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/probe-buffer-size",
        value: "1k",
        error: #"zeropod.ctrox.dev/probe-buffer-size: invalid integer "1k": not a decimal number"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/probe-buffer-size",
        value: "0",
        error: #"zeropod.ctrox.dev/probe-buffer-size: invalid integer "0": must be between 1 and 1048576"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/probe-buffer-size",
        value: "-5",
        error: #"zeropod.ctrox.dev/probe-buffer-size: invalid integer "-5": must be between 1 and 1048576"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/probe-buffer-size",
        value: "99999999999999999999",
        error: #"zeropod.ctrox.dev/probe-buffer-size: invalid integer "99999999999999999999": not a decimal number"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/connect-timeout",
        value: "5 s",
        error: #"zeropod.ctrox.dev/connect-timeout: invalid duration "5 s": unknown unit " s""#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/proxy-timeout",
        value: "-5s",
        error: #"zeropod.ctrox.dev/proxy-timeout: invalid duration "-5s": must not be negative"#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/migrate",
        value: "web;db",
        error: #"zeropod.ctrox.dev/migrate: invalid container name list "web;db": name 1 "web;db" contains ";""#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/live-migrate",
        value: "web,db",
        error: #"zeropod.ctrox.dev/live-migrate: invalid container name "web,db": contains ",""#
    ),
    BadCase(
        key: "zeropod.ctrox.dev/live-migrate",
        value: "web\n",
        error:
            #"zeropod.ctrox.dev/live-migrate: invalid container name "web\n": contains white space or a control character"#
    ),
]

@Test(arguments: badCases)
func containerConfig_refuses(_ c: BadCase) {
    do {
        let config = try ContainerConfig(annotations: spec([c.key: c.value]))
        Issue.record("accepted \(c.key)=\(c.value) as \(config)")
    } catch {
        #expect(error.key == c.key)
        #expect(error.value == c.value)
        #expect(error.location == nil)
        #expect(error.description == c.error)
    }
}

@Test func containerConfig_reportsFirstBadAnnotationInKeyOrder() {
    let annotations = spec([scaledown: "1x", portsMap: "web=x"])
    #expect(throws: ConfigError(key: scaledown, value: "1x", reason: .invalidDuration(#"unknown unit "x""#))) {
        try ContainerConfig(annotations: annotations)
    }
}

@Test func containerConfig_unrecognizedKeys_listsTyposOnly() {
    let keys = ContainerConfig.unrecognizedKeys(
        in: spec([
            "zeropod.ctrox.dev/scaledown-durration": "1m", "zeropod.ctrox.dev/cpu-requests": "{}",
            scaledown: "1m", "other.example/x": "y", "zeropod.ctrox.dev/Ports-map": "web=80",
        ])
    )
    #expect(keys == ["zeropod.ctrox.dev/Ports-map", "zeropod.ctrox.dev/scaledown-durration"])
}

@Test func annotationKeys_matchTheOriginal() {
    #expect(
        ZeropodAnnotation.allCases.map(\.rawValue) == [
            "zeropod.ctrox.dev/scaledown-duration", "zeropod.ctrox.dev/container-names", "zeropod.ctrox.dev/ports-map",
            "zeropod.ctrox.dev/disable-checkpointing", "zeropod.ctrox.dev/pre-dump",
            "zeropod.ctrox.dev/disable-probe-detection", "zeropod.ctrox.dev/probe-buffer-size",
            "zeropod.ctrox.dev/connect-timeout", "zeropod.ctrox.dev/proxy-timeout", "zeropod.ctrox.dev/migrate",
            "zeropod.ctrox.dev/live-migrate", "zeropod.ctrox.dev/disable-migrate-data", "zeropod.ctrox.dev/dry-run",
        ]
    )
}

// MARK: - Go syntax

@Test func goDuration_matchesGoParseDuration() throws {
    // Values from Go's time.ParseDuration documentation and tests.
    let table: [(String, Int64)] = [
        ("0", 0), ("5s", 5_000_000_000), ("30s", 30_000_000_000), ("1478s", 1_478_000_000_000),
        ("-5s", -5_000_000_000), ("+5s", 5_000_000_000), ("-0", 0), ("+0", 0),
        ("5.0s", 5_000_000_000), ("5.6s", 5_600_000_000), ("5.s", 5_000_000_000), (".5s", 500_000_000),
        ("1.0s", 1_000_000_000), ("1.00s", 1_000_000_000), ("1.004s", 1_004_000_000),
        ("1.0040s", 1_004_000_000), ("100.00100s", 100_001_000_000),
        ("10ns", 10), ("11us", 11_000), ("12µs", 12_000), ("12μs", 12_000), ("13ms", 13_000_000),
        ("14s", 14_000_000_000), ("15m", 900_000_000_000), ("16h", 57_600_000_000_000),
        ("3h30m", 12_600_000_000_000), ("10.5s4m", 250_500_000_000), ("-2m3.4s", -123_400_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006), ("39h9m14.425s", 140_954_425_000_000),
        ("52763797000ns", 52_763_797_000), ("0.3333333333333333333h", 1_200_000_000_000),
        ("9007199254740993ns", 9_007_199_254_740_993), ("9223372036854775807ns", Int64.max),
        ("9223372036854775.807us", Int64.max), ("9223372036s854ms775us807ns", Int64.max),
        ("-9223372036854775808ns", Int64.min), ("-9223372036854775.808us", Int64.min),
        ("0.100000000000000000000h", 360_000_000_000),
        ("0.830103483285477580700h", 2_988_372_539_827),
    ]
    for (text, ns) in table {
        #expect(try GoDuration.nanoseconds(text) == ns, "\(text)")
    }
    let bad: [(String, GoDuration.ParseError)] = [
        ("", .empty), ("3", .missingUnit), ("-", .empty), ("s", .expectedNumber), (".", .expectedNumber),
        ("-.", .expectedNumber), (".s", .expectedNumber), ("+.s", .expectedNumber), ("1d", .unknownUnit("d")),
        ("\u{85}\u{85}", .expectedNumber), ("\u{ff}", .expectedNumber),
        ("9223372036854775810ns", .outOfRange), ("9223372036854775808ns", .outOfRange),
        ("-9223372036854775809ns", .outOfRange), ("9223372036854775.808us", .outOfRange),
        ("3000000h", .outOfRange),
    ]
    for (text, error) in bad {
        #expect(throws: error, "\(text)") { try GoDuration.nanoseconds(text) }
    }
}

@Test func goDuration_format() {
    #expect(GoDuration.format(.seconds(60)) == "1m0s")
    #expect(GoDuration.format(.seconds(5)) == "5s")
    #expect(GoDuration.format(.seconds(5400)) == "1h30m0s")
    #expect(GoDuration.format(.milliseconds(500)) == "500ms")
    #expect(GoDuration.format(.milliseconds(1500)) == "1.5s")
    #expect(GoDuration.format(.microseconds(7)) == "7µs")
    #expect(GoDuration.format(.nanoseconds(7)) == "7ns")
    #expect(GoDuration.format(.zero) == "0s")
    #expect(GoDuration.format(.seconds(-90)) == "-1m30s")
    for text in ["1m0s", "5s", "1h30m0s", "500ms", "1.5s", "7µs", "7ns", "0s", "-1m30s", "2562047h47m16.854775807s"] {
        #expect(GoDuration.format(try! GoDuration.parse(text)) == text)
    }
}

@Test func goBool_acceptsExactlyGoSpellings() {
    for t in ["1", "t", "T", "TRUE", "true", "True"] { #expect(GoBool.parse(t) == true) }
    for f in ["0", "f", "F", "FALSE", "false", "False"] { #expect(GoBool.parse(f) == false) }
    for x in ["", "yes", "no", "on", "tRUE", "FaLsE", " true", "2", "00"] { #expect(GoBool.parse(x) == nil) }
}

// MARK: - IP addresses

@Test func ipAddress_parseAndFormat() throws {
    let table: [(String, String)] = [
        ("10.0.0.5", "10.0.0.5"), ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"),
        ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("fd00::5", "fd00::5"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:0db8:0000:0001:0001:0001:0001:0001", "2001:db8:0:1:1:1:1:1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("::ffff:10.0.0.5", "::ffff:10.0.0.5"),
        ("::FFFF:a00:5", "::ffff:10.0.0.5"), ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
    ]
    for (text, canonical) in table {
        let a = try #require(IPAddress(text), "\(text)")
        #expect(a.description == canonical)
        #expect(IPAddress(canonical) == a)
        #expect(IPAddress(bytes: a.bytes) == a)
    }
    for bad in [
        "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", "1.2.3.4 ", "a.b.c.d",
        ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "::g",
        "fe80::1%eth0", "10.0.0.0/8", "1:", ":1", "::1.2.3", "::1.2.3.4.5", "1.2.3.4::", "1:2:3:4:5:6:7:1.2.3.4",
    ] {
        #expect(IPAddress(bad) == nil, "\(bad)")
    }
}

@Test func ipAddress_v4MappedForms() throws {
    let v4 = try #require(IPAddress("10.0.0.5"))
    let mapped = try #require(IPAddress("::ffff:10.0.0.5"))
    #expect(v4.v4Mapped == mapped)
    #expect(mapped.unmappedV4 == v4)
    #expect(v4.matchingForms == [v4, mapped] && mapped.matchingForms == [v4, mapped])
    #expect(IPAddress("fd00::5")?.unmappedV4 == nil)
    #expect(IPAddress("127.1.2.3")?.isLoopback == true && IPAddress("::1")?.isLoopback == true)
    #expect(IPAddress("::ffff:127.0.0.1")?.isLoopback == true && IPAddress("10.0.0.1")?.isLoopback == false)
    #expect(IPAddress("::2")?.isLoopback == false)
}

// MARK: - node configuration

@Test func nodeConfig_defaultsAndFullFile() throws {
    #expect(try NodeConfig(parsing: "") == NodeConfig())
    let text = """
        # kubelet addresses of this node
        probe-source-addresses = 10.0.0.5, fd00::5 ,::ffff:192.168.1.2
        learn-probe-sources = false

        loopback-is-activity=1
          open-connections-are-activity = False\r
        criu-path = /opt/zeropod/bin/criu
        runc-path = runc
        state-dir = /var/lib/zp
        run-dir = /run/zp
        """
    let c = try NodeConfig(parsing: text, source: "node.conf")
    #expect(c.probeSourceAddresses.map(\.description) == ["10.0.0.5", "fd00::5", "::ffff:192.168.1.2"])
    #expect(!c.learnProbeSources && c.loopbackIsActivity && !c.openConnectionsAreActivity)
    #expect(c.criuPath == "/opt/zeropod/bin/criu" && c.runcPath == "runc")
    #expect(c.stateDirectory == "/var/lib/zp" && c.runDirectory == "/run/zp")
    for probe in ["10.0.0.5", "::ffff:10.0.0.5", "fd00::5", "192.168.1.2", "::ffff:192.168.1.2"] {
        #expect(c.isProbeSource(IPAddress(probe)!), "\(probe)")
    }
    for other in ["10.0.0.6", "fd00::6", "::ffff:10.0.0.6", "127.0.0.1"] {
        #expect(!c.isProbeSource(IPAddress(other)!), "\(other)")
    }
    #expect(try NodeConfig(parsing: c.rendered) == c)
    #expect(try NodeConfig(parsing: NodeConfig().rendered) == NodeConfig())
    #expect(try NodeConfig(parsing: "probe-source-addresses =").probeSourceAddresses.isEmpty)
}

@Test func nodeConfig_probeSourceAddresses_atMost64Distinct() throws {
    let sixtyFour = (1...64).map { "10.0.0.\($0)" }
    // An IPv4 address and its IPv4-mapped form are one entry of the pods' map.
    let withTwins = (sixtyFour + ["::ffff:10.0.0.1"]).joined(separator: ",")
    #expect(try NodeConfig(parsing: "probe-source-addresses = \(withTwins)").probeSourceAddresses.count == 65)
    #expect(throws: ConfigError.self) {
        try NodeConfig(parsing: "probe-source-addresses = \((sixtyFour + ["10.0.1.1"]).joined(separator: ","))")
    }
    let error = #expect(throws: ConfigError.self) {
        try NodeConfig(
            parsing: "probe-source-addresses = \((sixtyFour + ["fd00::1"]).joined(separator: ","))",
            source: "n.conf"
        )
    }
    #expect("\(error.map { "\($0)" } ?? "")".hasPrefix("n.conf:1: probe-source-addresses: invalid address"))
    #expect(
        "\(error.map { "\($0)" } ?? "")".hasSuffix(": 65 addresses; at most 64 are supported"),
        "\(String(describing: error))"
    )
}

@Test func nodeConfig_refusesWithLocation() {
    let table: [(String, String)] = [
        (
            "probe-source-addresses = 10.0.0.256",
            #"n.conf:1: probe-source-addresses: invalid address "10.0.0.256": element 1 "10.0.0.256" is not an IPv4 or IPv6 address"#
        ),
        (
            "\n\nprobe-source-addresses = 10.0.0.1,,fd00::1",
            #"n.conf:3: probe-source-addresses: invalid address "10.0.0.1,,fd00::1": element 2 "" is not an IPv4 or IPv6 address"#
        ),
        (
            "probe-source-addresses = 10.0.0.0/8",
            #"n.conf:1: probe-source-addresses: invalid address "10.0.0.0/8": element 1 "10.0.0.0/8" is not an IPv4 or IPv6 address"#
        ),
        (
            "loopback-is-activity = yes",
            #"n.conf:1: loopback-is-activity: invalid boolean "yes": expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"#
        ),
        ("# c\nprobe-sources = 10.0.0.1", #"n.conf:2: probe-sources: unknown setting (value "10.0.0.1")"#),
        ("runc-path = a\nrunc-path = b", #"n.conf:2: runc-path: set again to "b" (first set on line 1)"#),
        ("just words", #"n.conf:1: malformed line "just words": expected key = value, a # comment or a blank line"#),
        (" = 5", #"n.conf:1: malformed line "= 5": expected key = value, a # comment or a blank line"#),
        (
            "criu-path = bin/criu",
            #"n.conf:1: criu-path: invalid path "bin/criu": must be absolute or a bare command name"#
        ),
        ("criu-path =", #"n.conf:1: criu-path: invalid path "": is empty"#),
        ("state-dir = var/lib", #"n.conf:1: state-dir: invalid path "var/lib": must be absolute"#),
        // Parsed but not carried out: refused (any value, the default included), never ignored.
        (
            "bpf-pin-dir = /sys/fs/bpf/zeropod",
            #"n.conf:1: bpf-pin-dir: not supported yet (value "/sys/fs/bpf/zeropod"): the shim keeps its eBPF links and maps in memory and pins nothing; remove the line"#
        ),
    ]
    for (text, message) in table {
        do {
            let c = try NodeConfig(parsing: text, source: "n.conf")
            Issue.record("accepted \(text) as \(c)")
        } catch {
            #expect(error.description == message)
        }
    }
}

@Test func nodeConfig_lazyRestoreSetting() throws {
    #expect(NodeConfig().lazyRestore == .auto)
    for mode in LazyRestoreMode.allCases {
        let c = try NodeConfig(parsing: "lazy-restore = \(mode.rawValue)")
        #expect(c.lazyRestore == mode)
        #expect(try NodeConfig(parsing: c.rendered) == c)
    }
    #expect(NodeConfig().rendered.contains("lazy-restore = auto\n"))
    let table: [(String, String)] = [
        ("lazy-restore = yes", #"n.conf:1: lazy-restore: invalid value "yes": expected one of auto, on, off"#),
        ("lazy-restore = ON", #"n.conf:1: lazy-restore: invalid value "ON": expected one of auto, on, off"#),
        ("lazy-restore =", #"n.conf:1: lazy-restore: invalid value "": expected one of auto, on, off"#),
        ("lazy-restore = on\nlazy-restore = off", #"n.conf:2: lazy-restore: set again to "off" (first set on line 1)"#),
    ]
    for (text, message) in table {
        do {
            let c = try NodeConfig(parsing: text, source: "n.conf")
            Issue.record("accepted \(text) as \(c)")
        } catch {
            #expect(error.description == message)
        }
    }
}

@Test func nodeConfig_criuLogLevelSetting() throws {
    #expect(NodeConfig().criuLogLevel == 2)
    #expect(NodeConfig().rendered.contains("criu-log-level = 2\n"))
    for level in 0...4 {
        let c = try NodeConfig(parsing: "criu-log-level = \(level)")
        #expect(c.criuLogLevel == level)
        #expect(try NodeConfig(parsing: c.rendered) == c)
    }
    let table: [(String, String)] = [
        ("criu-log-level = 5", #"n.conf:1: criu-log-level: invalid value "5": expected one of 0, 1, 2, 3, 4"#),
        ("criu-log-level = -1", #"n.conf:1: criu-log-level: invalid value "-1": expected one of 0, 1, 2, 3, 4"#),
        ("criu-log-level = debug", #"n.conf:1: criu-log-level: invalid value "debug": expected one of 0, 1, 2, 3, 4"#),
        ("criu-log-level =", #"n.conf:1: criu-log-level: invalid value "": expected one of 0, 1, 2, 3, 4"#),
    ]
    for (text, message) in table {
        do {
            let c = try NodeConfig(parsing: text, source: "n.conf")
            Issue.record("accepted \(text) as \(c)")
        } catch {
            #expect(error.description == message)
        }
    }
}

/// `skip-zero-pages` (decision 0066): on by default, a Go bool, rendered and parsed back.
@Test func nodeConfig_skipZeroPagesSetting() throws {
    #expect(NodeConfig().skipZeroPages)
    #expect(NodeConfig().rendered.contains("skip-zero-pages = true\n"))
    for (text, value) in [("false", false), ("0", false), ("true", true), ("1", true)] {
        let c = try NodeConfig(parsing: "skip-zero-pages = \(text)")
        #expect(c.skipZeroPages == value)
        #expect(try NodeConfig(parsing: c.rendered) == c)
    }
    do {
        let c = try NodeConfig(parsing: "skip-zero-pages = maybe", source: "n.conf")
        Issue.record("accepted maybe as \(c)")
    } catch {
        #expect(error.description.hasPrefix(#"n.conf:1: skip-zero-pages: invalid boolean "maybe""#), "\(error)")
    }
}

/// `pages-transfer-timeout`: the shims' bound on a live migration's page transfer (decision 0058):
/// a positive Go duration of at most a day, default 5m (the original's `-pages-transfer-timeout`).
@Test func nodeConfig_pagesTransferTimeoutSetting() throws {
    #expect(NodeConfig().pagesTransferTimeout == .seconds(300))
    #expect(NodeConfig().rendered.contains("pages-transfer-timeout = 5m0s\n"))
    let accepted: [(String, Duration)] = [
        ("15s", .seconds(15)), ("1m30s", .seconds(90)), ("500ms", .milliseconds(500)), ("24h", .seconds(86_400)),
    ]
    for (text, duration) in accepted {
        let c = try NodeConfig(parsing: "pages-transfer-timeout = \(text)")
        #expect(c.pagesTransferTimeout == duration)
        #expect(try NodeConfig(parsing: c.rendered) == c)
    }
    let positive = "must be positive (the pages need time to move)"
    let table: [(String, String)] = [
        ("pages-transfer-timeout = 0", #"n.conf:1: pages-transfer-timeout: invalid duration "0": "# + positive),
        ("pages-transfer-timeout = -1m", #"n.conf:1: pages-transfer-timeout: invalid duration "-1m": "# + positive),
        (
            "pages-transfer-timeout = 5",
            #"n.conf:1: pages-transfer-timeout: invalid duration "5": missing unit (one of ns, us, ms, s, m, h)"#
        ),
        ("pages-transfer-timeout = 25h", #"n.conf:1: pages-transfer-timeout: invalid duration "25h": at most 24h0m0s"#),
        ("pages-transfer-timeout =", #"n.conf:1: pages-transfer-timeout: invalid duration "": empty"#),
    ]
    for (text, message) in table {
        do {
            let c = try NodeConfig(parsing: text, source: "n.conf")
            Issue.record("accepted \(text) as \(c)")
        } catch {
            #expect(error.description == message)
        }
    }
}

@Test func lazyRestoreMode_decision() {
    let threshold = LazyRestoreMode.autoThresholdBytes
    #expect(threshold == 160 * 1024 * 1024)
    // Without userfaultfd nothing is lazy.
    for mode in LazyRestoreMode.allCases {
        #expect(!mode.restoresLazily(pageBytes: 1 << 30, userfaultfdUsable: false), "\(mode)")
    }
    #expect(!LazyRestoreMode.off.restoresLazily(pageBytes: 1 << 30, userfaultfdUsable: true))
    #expect(LazyRestoreMode.on.restoresLazily(pageBytes: 0, userfaultfdUsable: true))
    #expect(LazyRestoreMode.auto.restoresLazily(pageBytes: threshold, userfaultfdUsable: true))
    #expect(!LazyRestoreMode.auto.restoresLazily(pageBytes: threshold - 1, userfaultfdUsable: true))
    #expect(!LazyRestoreMode.auto.restoresLazily(pageBytes: 0, userfaultfdUsable: true))
}

// MARK: - documentation

@Test func docs_describeEveryAnnotationAndNodeSetting() throws {
    let url = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/configuration.md")
    let text = try String(contentsOf: url, encoding: .utf8)
    for key in ZeropodAnnotation.allCases {
        let short = String(key.rawValue.dropFirst(ZeropodAnnotation.prefix.count))
        #expect(text.contains("| `\(short)` |"), "docs/configuration.md has no table row for \(key.rawValue)")
    }
    for key in NodeConfig.Key.allCases {
        #expect(text.contains("| `\(key.rawValue)` |"), "docs/configuration.md has no table row for \(key.rawValue)")
    }
}

// MARK: - seeded property tests

@Test func random_portsMaps_roundTrip() throws {
    var g = SplitMix64(seed: 99)
    let names = ["web", "db", "a-b", "x1"]
    for _ in 0..<2000 {
        let entries: [(String, [UInt16])] = (0..<Int.random(in: 1...4, using: &g)).map { _ in
            (
                names.randomElement(using: &g)!,
                (0..<Int.random(in: 1...3, using: &g)).map { _ in UInt16.random(in: 1...65535, using: &g) }
            )
        }
        let text = entries.map { "\($0.0)=" + $0.1.map(String.init).joined(separator: ",") }.joined(separator: ";")
        let parsed = try PortsMap.parse(text, key: "k")
        #expect(parsed.map(\.name) == entries.map(\.0) && parsed.map(\.ports) == entries.map(\.1), "\(text)")
        let config = try ContainerConfig(annotations: [CRIAnnotation.containerName: "web", portsMap: text])
        #expect(config.ports == entries.filter { $0.0 == "web" }.flatMap(\.1))
    }
}

@Test func random_durations_formatAndParseBack() throws {
    var g = SplitMix64(seed: 100)
    for _ in 0..<5000 {
        let ns = Int64(bitPattern: g.next()) >> Int64.random(in: 0..<63, using: &g)
        let text = GoDuration.format(.nanoseconds(ns))
        #expect(try GoDuration.nanoseconds(text) == ns, "\(ns) formatted as \(text)")
    }
}

@Test func random_garbageAnnotations_neverCrashAndAlwaysNameTheKey() {
    var g = SplitMix64(seed: 101)
    let alphabet = Array("0123456789.,;=-+ smhuµnxTtrueFalse\u{0}é")
    for _ in 0..<5000 {
        let key = ZeropodAnnotation.allCases.randomElement(using: &g)!
        let value = String((0..<Int.random(in: 0..<12, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
        do {
            _ = try ContainerConfig(annotations: [key.rawValue: value])
        } catch {
            #expect(error.key == key.rawValue && error.value == value)
            #expect(error.description.hasPrefix("\(key.rawValue): invalid "), "\(error)")
        }
    }
}

// MARK: - node configuration: limits and unsupported keys (issue 15)

/// More distinct probe sources than a pod's eBPF map holds are refused at parse, naming the count
/// and the limit; an IPv4 address and its IPv4-mapped form count once, so 64 of each parse.
@Test func nodeConfig_probeSourceLimit_checkedAtParse() throws {
    func addresses(_ n: Int, mapped: Bool = false) -> String {
        (0..<n).map { (mapped ? "::ffff:" : "") + "10.0.\($0 / 250).\($0 % 250 + 1)" }.joined(separator: ", ")
    }
    let limit = NodeConfig.maximumProbeSourceAddresses
    #expect(limit == 64)
    #expect(try NodeConfig(parsing: "probe-source-addresses = \(addresses(limit))").probeSourceAddresses.count == limit)
    let both = addresses(limit) + ", " + addresses(limit, mapped: true)
    #expect(try NodeConfig(parsing: "probe-source-addresses = \(both)").probeSourceAddresses.count == 2 * limit)
    do {
        let c = try NodeConfig(parsing: "# kubelet\nprobe-source-addresses = \(addresses(limit + 1))", source: "n.conf")
        Issue.record("accepted \(c.probeSourceAddresses.count) addresses")
    } catch {
        #expect(error.location == "n.conf:2" && error.key == "probe-source-addresses")
        #expect(error.description.hasSuffix(": 65 addresses; at most 64 are supported"), "\(error)")
    }
}

/// `rendered` writes only keys the parser takes, so its output always parses back.
@Test func nodeConfig_renderedLeavesOutUnsupportedKeys() throws {
    #expect(!NodeConfig().rendered.contains("bpf-pin-dir"))
    #expect(NodeConfig.Key.supported.count == NodeConfig.Key.allCases.count - 1)
    #expect(try NodeConfig(parsing: NodeConfig().rendered) == NodeConfig())
}
