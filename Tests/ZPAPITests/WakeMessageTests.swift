import Testing
import ZPAPI
import ZPCore

// The `Wake` call's messages (docs/decisions/0011-wake-groups.md) against `protoc --encode`.

@Suite(.enabled(if: Protoc.isInstalled, Protoc.missingReason))
struct WakeMessageTests {
    @Test func wakeRequest_matchesProtoc() throws {
        let request = StatusAPI.WakeRequest(id: "db", origin: "wordpress/web")
        let golden = try protocStatus("WakeRequest", #"id: "db" origin: "wordpress/web""#)
        #expect(request.encoded() == golden)
        #expect(try StatusAPI.WakeRequest(decoding: golden) == request)
    }

    @Test(arguments: StatusAPI.WakeOutcome.allCases)
    func wakeResponse_matchesProtoc(outcome: StatusAPI.WakeOutcome) throws {
        let names: [StatusAPI.WakeOutcome: String] = [
            .woken: "WAKE_OUTCOME_WOKEN", .alreadyWaking: "WAKE_OUTCOME_ALREADY_WAKING",
            .notScaledDown: "WAKE_OUTCOME_NOT_SCALED_DOWN", .stopped: "WAKE_OUTCOME_STOPPED",
        ]
        let response = StatusAPI.WakeResponse(outcome: outcome, lifecyclePhase: .running, waited: .milliseconds(81))
        let golden = try protocStatus(
            "WakeResponse",
            "outcome: \(names[outcome]!) lifecycle_phase: PHASE_RUNNING waited_nanos: 81000000"
        )
        #expect(response.encoded() == golden)
        #expect(try StatusAPI.WakeResponse(decoding: golden) == response)
    }

    @Test func wakeResponse_unknownOrMissingOutcome_isRefused() throws {
        #expect(throws: ProtobufError.invalidValue(message: "zeropod.shim.v1.WakeResponse", field: 1, value: 9)) {
            try StatusAPI.WakeResponse(decoding: protocStatus("WakeResponse", "outcome: 9"))
        }
        #expect(throws: ProtobufError.invalidValue(message: "zeropod.shim.v1.WakeResponse", field: 1, value: 0)) {
            try StatusAPI.WakeResponse(decoding: protocStatus("WakeResponse", "lifecycle_phase: PHASE_RUNNING"))
        }
        let unknownPhase = try StatusAPI.WakeResponse(
            decoding: protocStatus("WakeResponse", "outcome: WAKE_OUTCOME_STOPPED lifecycle_phase: 99")
        )
        #expect(unknownPhase.outcome == .stopped && unknownPhase.lifecyclePhase == nil)
    }
}
