import Testing
import ZPAPI
import ZPCore

// The node service's messages (decision 0048) against `protoc --encode` on Fixtures/node.proto.

func protocNode(_ message: String, _ text: String) throws -> [UInt8] {
    try Protoc.encode("zeropod.node.v1.\(message)", in: "node.proto", text)
}

@Suite(.enabled(if: Protoc.isInstalled, Protoc.missingReason))
struct NodeMessageTests {
    static let pod = NodeAPI.PodInfo(
        name: "web-5d9c-abcde",
        namespace: "shop",
        containerName: "web",
        ports: [8080, 9090]
    )
    static let podText = #"name: "web-5d9c-abcde" namespace: "shop" container_name: "web" ports: [8080, 9090]"#

    static var migration: NodeAPI.MigrationInfo {
        var m = NodeAPI.MigrationInfo()
        m.imageID = String(repeating: "ab", count: 32)
        m.liveMigration = true
        m.pausedAt = ProtobufTimestamp(seconds: 1_767_225_600, nanos: 123_000)
        m.restoreStart = ProtobufTimestamp(seconds: 1_767_225_601, nanos: 5)
        m.restoreEnd = ProtobufTimestamp(seconds: 1_767_225_602, nanos: 0)
        m.ports = [8080, -1]
        m.migrateData = true
        m.failure = "image digest mismatch"
        m.migrationUID = "5f0c2a8e-1b7d-4c3e-9a61-0d2f8b4e7c19"
        return m
    }

    static let migrationText = """
        image_id: "\(String(repeating: "ab", count: 32))" live_migration: true \
        paused_at { seconds: 1767225600 nanos: 123000 } restore_start { seconds: 1767225601 nanos: 5 } \
        restore_end { seconds: 1767225602 } ports: [8080, -1] migrate_data: true failure: "image digest mismatch" \
        migration_uid: "5f0c2a8e-1b7d-4c3e-9a61-0d2f8b4e7c19"
        """

    @Test func evacRequest_matchesProtoc() throws {
        let request = NodeAPI.EvacRequest(podInfo: Self.pod, migrationInfo: Self.migration)
        let golden = try protocNode(
            "EvacRequest",
            "pod_info { \(Self.podText) } migration_info { \(Self.migrationText) }"
        )
        #expect(request.encoded() == golden)
        #expect(try NodeAPI.EvacRequest(decoding: golden) == request)
    }

    @Test func restoreRequestAndResponse_matchProtoc() throws {
        let request = NodeAPI.RestoreRequest(podInfo: Self.pod, migrationInfo: Self.migration)
        let golden = try protocNode(
            "RestoreRequest",
            "pod_info { \(Self.podText) } migration_info { \(Self.migrationText) }"
        )
        #expect(request.encoded() == golden)
        #expect(try NodeAPI.RestoreRequest(decoding: golden) == request)
        let response = NodeAPI.RestoreResponse(migrationInfo: Self.migration)
        let responseGolden = try protocNode("RestoreResponse", "migration_info { \(Self.migrationText) }")
        #expect(response.encoded() == responseGolden)
        #expect(try NodeAPI.RestoreResponse(decoding: responseGolden) == response)
    }

    @Test func emptyMigrationInfo_isEmpty() throws {
        #expect(NodeAPI.MigrationInfo().encoded() == (try protocNode("MigrationInfo", "")))
    }

    @Test(arguments: NodeAPI.EvacOutcome.allCases)
    func evacResponse_matchesProtoc(outcome: NodeAPI.EvacOutcome) throws {
        let names: [NodeAPI.EvacOutcome: String] = [
            .claimed: "EVAC_OUTCOME_CLAIMED", .unclaimed: "EVAC_OUTCOME_UNCLAIMED",
            .noMigration: "EVAC_OUTCOME_NO_MIGRATION", .failed: "EVAC_OUTCOME_FAILED",
        ]
        let response = NodeAPI.EvacResponse(outcome: outcome, reason: "shop/web-5d9c-abcde")
        let golden = try protocNode(
            "EvacResponse",
            #"empty {} outcome: \#(names[outcome]!) reason: "shop/web-5d9c-abcde""#
        )
        #expect(response.encoded() == golden)
        #expect(try NodeAPI.EvacResponse(decoding: golden) == response)
    }

    @Test func evacResponse_withMigrationUID_matchesProtoc() throws {
        let response = NodeAPI.EvacResponse(outcome: .claimed, reason: "sha256:00", migrationUID: "5f0c2a8e")
        let golden = try protocNode(
            "EvacResponse",
            #"empty {} outcome: EVAC_OUTCOME_CLAIMED reason: "sha256:00" migration_uid: "5f0c2a8e""#
        )
        #expect(response.encoded() == golden)
        #expect(try NodeAPI.EvacResponse(decoding: golden) == response)
    }

    @Test func evacResponse_withoutOutcome_isRefused() throws {
        // The original's EvacResponse (only `empty`) carries no decision: refused, not read as "claimed".
        #expect(throws: ProtobufError.invalidValue(message: "zeropod.node.v1.EvacResponse", field: 2, value: 0)) {
            try NodeAPI.EvacResponse(decoding: protocNode("EvacResponse", "empty {}"))
        }
    }

    @Test func pullImage_matchesProtoc() throws {
        let request = NodeAPI.PullImageRequest(
            imageID: "c0ffee",
            offset: 1 << 33,
            length: NodeAPI.imageWindowSize,
            digest: "sha256:00"
        )
        let golden = try protocNode(
            "PullImageRequest",
            #"image_id: "c0ffee" offset: 8589934592 digest: "sha256:00" length: 16777216"#
        )
        #expect(request.encoded() == golden)
        #expect(try NodeAPI.PullImageRequest(decoding: golden) == request)
        let chunk = NodeAPI.Image(imageData: [0, 1, 2, 0xff])
        let chunkGolden = try protocNode("Image", #"image_data: "\000\001\002\377""#)
        #expect(chunk.encoded() == chunkGolden)
        #expect(try NodeAPI.Image(decoding: chunkGolden) == chunk)
    }

    @Test func unpackedPorts_areReadToo() throws {
        // A sender that writes repeated int32 unpacked (proto2 style) is understood.
        var w = ProtobufWriter()
        w.writeInt32(field: 4, 80)
        w.writeInt32(field: 4, 443)
        #expect(try NodeAPI.PodInfo(decoding: w.bytes).ports == [80, 443])
    }
}
