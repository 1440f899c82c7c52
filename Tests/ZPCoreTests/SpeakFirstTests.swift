import Testing
import ZPCore

// `zeropod-swift/speaks-first-ports` and the learning of ports that speak first (decision 0055).

private let key = "zeropod-swift/speaks-first-ports"

@Test func speaksFirstPorts_absentOrEmpty_isNone_listParses() throws {
    #expect(try ContainerConfig(annotations: [:]).speaksFirstPorts.isEmpty)
    #expect(try ContainerConfig(annotations: [key: ""]).speaksFirstPorts.isEmpty, "empty means the default")
    #expect(try ContainerConfig(annotations: [key: "3306"]).speaksFirstPorts == [3306])
    #expect(try ContainerConfig(annotations: [key: "25,3306,21,65535,1"]).speaksFirstPorts == [1, 21, 25, 3306, 65535])
    #expect(ContainerConfig.unrecognizedKeys(in: [key: "25"]).isEmpty)
}

@Test(arguments: [
    ("25,", "element 2 \"\" is not a decimal number"),
    (",25", "element 1 \"\" is not a decimal number"),
    ("25, 3306", "element 2 \" 3306\" is not a decimal number"),
    ("smtp", "element 1 \"smtp\" is not a decimal number"),
    ("-1", "element 1 \"-1\" is not a decimal number"),
    ("0", "element 1 \"0\" is not between 1 and 65535"),
    ("65536", "element 1 \"65536\" is not between 1 and 65535"),
    ("3306,25,3306", "port 3306 is listed twice"),
])
func speaksFirstPorts_badList_isRefusedNamingElementAndReason(value: String, detail: String) {
    let expected = ConfigError(key: key, value: value, reason: .invalidPortList(detail))
    #expect(throws: expected) { try ContainerConfig(annotations: [key: value]) }
    #expect(expected.description == "\(key): invalid port list \"\(value)\": \(detail)")
}

@Test func speaksFirstPorts_refusedWhereProbesAreKnownOnlyByContent() throws {
    let set = try ContainerConfig(annotations: [key: "3306,25"])
    #expect(set.speaksFirstPortsProblem(probesRecognisedWithoutContent: true) == nil)
    let problem = try #require(set.speaksFirstPortsProblem(probesRecognisedWithoutContent: false))
    #expect(problem.key == key && problem.value == "25,3306")
    #expect(problem.description.contains("not supported yet"))
    #expect(problem.description.contains("learn-probe-sources"))
    // Without probe detection every connection restores at once: nothing to refuse.
    let noDetection = try ContainerConfig(annotations: [
        key: "3306", "zeropod.ctrox.dev/disable-probe-detection": "true",
    ])
    #expect(noDetection.speaksFirstPortsProblem(probesRecognisedWithoutContent: false) == nil)
    // Nothing set, nothing to refuse.
    #expect(try ContainerConfig(annotations: [:]).speaksFirstPortsProblem(probesRecognisedWithoutContent: false) == nil)
}

@Test func learning_applicationFirst_learns_clientFirst_unlearns() {
    var ports = SpeakFirstPorts()
    #expect(!ports.speaksFirst(3306))
    #expect(ports.connectionObserved(port: 3306, firstSpeaker: .application) == .learned(3306))
    #expect(ports.speaksFirst(3306) && ports.learned == [3306])
    #expect(ports.connectionObserved(port: 3306, firstSpeaker: .application) == .none, "learned once")
    #expect(!ports.speaksFirst(8080), "per port")
    #expect(ports.connectionObserved(port: 8080, firstSpeaker: .client) == .none, "nothing to unlearn")
    #expect(ports.connectionObserved(port: 3306, firstSpeaker: .client) == .unlearned(3306))
    #expect(!ports.speaksFirst(3306) && ports.learned.isEmpty)
    #expect(ports.connectionObserved(port: 3306, firstSpeaker: .application) == .learned(3306), "learned again")
}

@Test func learning_neverUnlearnsAnnotatedPorts() {
    var ports = SpeakFirstPorts(configured: [25])
    #expect(ports.speaksFirst(25))
    #expect(ports.connectionObserved(port: 25, firstSpeaker: .client) == .none)
    #expect(ports.speaksFirst(25))
    #expect(ports.connectionObserved(port: 25, firstSpeaker: .application) == .none)
    #expect(ports.learned.isEmpty, "an annotated port is not also learned")
}

@Test func learning_randomSequences_matchAModel() {
    // Seeded: each port speaks first iff it is annotated or its last observation was the application.
    var generator = SplitMix(seed: 0x5eed_0055)
    for _ in 0..<200 {
        let configured = Set((0..<3).map { _ in UInt16(1 + generator.next() % 6) })
        var ports = SpeakFirstPorts(configured: configured)
        var last: [UInt16: FirstSpeaker] = [:]
        for _ in 0..<40 {
            let port = UInt16(1 + generator.next() % 6)
            let speaker: FirstSpeaker = generator.next() % 2 == 0 ? .application : .client
            let before = ports.speaksFirst(port)
            let change = ports.connectionObserved(port: port, firstSpeaker: speaker)
            last[port] = speaker
            let after = ports.speaksFirst(port)
            #expect(after == (configured.contains(port) || last[port] == .application))
            switch change {
            case .learned(let p): #expect(p == port && !before && after)
            case .unlearned(let p): #expect(p == port && before && !after)
            case .none: #expect(before == after)
            }
        }
        #expect(ports.learned.isDisjoint(with: configured))
    }
}

private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
