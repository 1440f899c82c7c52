import Foundation
import Testing
import ZPKube
import ZPTestSupport

@testable import KubeAPIDouble

// The API double serving config/'s Migration CRD (decision 0051): the rules the migration
// controllers rely on, each checked against a request that would be answered otherwise if the
// rule were missing.

private let base = "/apis/runtime.zeropod.ctrox.dev/v1/namespaces/default/migrations"

private func migration(_ name: String) -> JSON {
    [
        "apiVersion": "runtime.zeropod.ctrox.dev/v1", "kind": "Migration",
        "metadata": ["name": .string(name), "namespace": "default"],
        "spec": [
            "sourceNode": "node-a", "podTemplateHash": "5d9c", "restoreReady": false,
            "containers": [["name": "web", "id": "a1"]],
        ],
    ]
}

private func statusBody(_ phase: String, resourceVersion: String? = nil) -> JSON {
    var body: JSON = ["status": ["containers": [["name": "web", "condition": ["phase": .string(phase)]]]]]
    if let resourceVersion { body["metadata"] = ["resourceVersion": .string(resourceVersion)] }
    return body
}

private func withCRD(_ body: (KubeAPIDouble) async throws -> Void) async throws {
    try await withDouble { double in
        try double.installCustomResourceDefinition(migrationCRD())
        try await body(double)
    }
}

@Suite struct MigrationCRDDoubleTests {
    @Test func statusIsASubresource() async throws {
        try await withCRD { double in
            // A create's status is dropped.
            var withStatus = migration("m1")
            withStatus["status"] = statusBody("Completed")["status"]
            let created = try double.create("migrations", namespace: "default", withStatus)
            #expect(created["status"] == nil)
            #expect(created["apiVersion"]?.stringValue == "runtime.zeropod.ctrox.dev/v1")
            // The main resource ignores status; /status ignores everything else.
            let main = double.call(
                "PATCH",
                "\(base)/m1",
                body: statusBody("Failed"),
                contentType: "application/merge-patch+json"
            )
            #expect(main.status == 200)
            #expect(main.body["status"] == nil)
            var both = statusBody("Running")
            both["spec"] = ["targetNode": "node-b"]
            let status = double.call(
                "PATCH",
                "\(base)/m1/status",
                body: both,
                contentType: "application/merge-patch+json"
            )
            #expect(status.status == 200)
            #expect(
                status.body[path: ["status", "containers"]]?.arrayValue?.first?[path: ["condition", "phase"]]?
                    .stringValue == "Running"
            )
            #expect(status.body[path: ["spec", "targetNode"]] == nil)
        }
    }

    @Test func schema_refusesWrongTypesAndPhases_prunesUnknownFields() async throws {
        try await withCRD { double in
            var wrongType = migration("m2")
            wrongType[path: ["spec", "restoreReady"]] = "yes"
            #expect(throws: KubeAPIDouble.DoubleError.self) {
                try double.create("migrations", namespace: "default", wrongType)
            }
            var missing = migration("m2")
            missing[path: ["spec", "sourceNode"]] = nil
            #expect(throws: KubeAPIDouble.DoubleError.self) {
                try double.create("migrations", namespace: "default", missing)
            }
            var unknown = migration("m2")
            unknown[path: ["spec", "surprise"]] = 1
            let created = try double.create("migrations", namespace: "default", unknown)
            #expect(created[path: ["spec", "surprise"]] == nil)
            #expect(created[path: ["spec", "sourceNode"]]?.stringValue == "node-a")
            let strict = double.call(
                "PATCH",
                "\(base)/m2",
                query: ["fieldValidation": "Strict"],
                body: ["spec": ["surprise": 2]],
                contentType: "application/merge-patch+json"
            )
            #expect(strict.status == 400)
            let badPhase = double.call(
                "PATCH",
                "\(base)/m2/status",
                body: statusBody("Finished"),
                contentType: "application/merge-patch+json"
            )
            #expect(badPhase.status == 422)
        }
    }

    @Test func strategicMergePatch_isUnsupported_andStaleResourceVersionsConflict() async throws {
        try await withCRD { double in
            let created = try double.create("migrations", namespace: "default", migration("m3"))
            let strategic = double.call(
                "PATCH",
                "\(base)/m3",
                body: ["spec": ["targetNode": "node-b"]],
                contentType: "application/strategic-merge-patch+json"
            )
            #expect(strategic.status == 415)
            let version = try #require(created[path: ["metadata", "resourceVersion"]]?.stringValue)
            let first = double.call(
                "PATCH",
                "\(base)/m3",
                body: ["metadata": ["resourceVersion": .string(version)], "spec": ["targetNode": "node-b"]],
                contentType: "application/merge-patch+json"
            )
            #expect(first.status == 200)
            // A second claimer that computed its change from the same version loses.
            let second = double.call(
                "PATCH",
                "\(base)/m3",
                body: ["metadata": ["resourceVersion": .string(version)], "spec": ["targetNode": "node-c"]],
                contentType: "application/merge-patch+json"
            )
            #expect(second.status == 409)
            #expect(
                double.object("migrations", namespace: "default", name: "m3")?[path: ["spec", "targetNode"]]?
                    .stringValue == "node-b"
            )
        }
    }

    @Test func finalizers_keepADeletedMigrationUntilRemoved() async throws {
        try await withCRD { double in
            var object = migration("m4")
            object[path: ["metadata", "finalizers"]] = ["migration.runtime.zeropod.ctrox.dev/checkpoint-cleanup"]
            try double.create("migrations", namespace: "default", object)
            #expect(double.call("DELETE", "\(base)/m4").status == 200)
            let kept = try #require(double.object("migrations", namespace: "default", name: "m4"))
            #expect(kept[path: ["metadata", "deletionTimestamp"]] != nil)
            // No new finalizer on an object being deleted.
            let added = double.call(
                "PATCH",
                "\(base)/m4",
                body: [
                    "metadata": ["finalizers": ["migration.runtime.zeropod.ctrox.dev/checkpoint-cleanup", "other/x"]]
                ],
                contentType: "application/merge-patch+json"
            )
            #expect(added.status == 422)
            let removed = double.call(
                "PATCH",
                "\(base)/m4",
                body: ["metadata": ["finalizers": .null]],
                contentType: "application/merge-patch+json"
            )
            #expect(removed.status == 200)
            #expect(double.object("migrations", namespace: "default", name: "m4") == nil)
        }
    }
}
