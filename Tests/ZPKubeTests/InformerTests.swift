import Foundation
import KubeAPIDouble
import Testing
import ZPKube

/// The informer (list + watch of the pods on one node) against the API double: resume, relist on
/// 410, backoff on 429/500, recovery from an unreachable server, coalesced changes.
@Suite struct InformerTests {
    /// Runs an informer for node-a's pods in a task group while `body` drives the double.
    func withInformer(
        settings change: @escaping (inout KubeAPIDouble.Settings) -> Void = { _ in },
        sleeper: SleepRecorder = SleepRecorder(),
        options: InformerOptions = InformerOptions(fieldSelector: "spec.nodeName=node-a", pageSize: 2, watchTimeoutSeconds: 30, backoff: Backoff(initial: .milliseconds(100), maximum: .seconds(2))),
        _ body: @escaping @Sendable (KubeAPIDouble, Informer<Pod>) async throws -> Void
    ) async throws {
        try await withDoubleAndClient(settings: { $0.bookmarkInterval = .milliseconds(200); change(&$0) }, sleeper: sleeper) { double, client in
            let informer = Informer<Pod>(client: client, resource: .pods, options: options)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await informer.run() }
                defer { group.cancelAll() }
                try await body(double, informer)
            }
        }
    }

    @Test func listsThenWatches_onlyThisNode_andCoalescesChanges() async throws {
        try await withInformer { double, informer in
            for name in ["a1", "a2", "a3"] { try double.create("pods", namespace: "default", podJSON(name, node: "node-a")) }
            try double.create("pods", namespace: "default", podJSON("b1", node: "node-b"))
            await informer.waitForSync()
            #expect(Set(informer.objects.map { $0.metadata.name ?? "" }) == ["a1", "a2", "a3"])
            var changes = informer.changes().makeAsyncIterator()
            let first = await changes.next()
            #expect(Set(first ?? []) == [ObjectKey(namespace: "default", name: "a1"), ObjectKey(namespace: "default", name: "a2"), ObjectKey(namespace: "default", name: "a3")])
            // Two pages of two (limit 2), with the field selector, then a watch from the list's version.
            let lists = double.requests.filter { $0.path == "/api/v1/pods" && $0.query["watch"] == nil }
            #expect(lists.count == 2)
            #expect(lists.allSatisfy { $0.query["fieldSelector"] == "spec.nodeName=node-a" && $0.query["limit"] == "2" })
            #expect(await eventually { double.openWatches == 1 })

            // Ten label changes to one pod while nobody reads: one key in the next batch.
            for index in 0..<10 {
                double.call("PATCH", "/api/v1/namespaces/default/pods/a1", body: ["metadata": ["labels": ["n": .string(String(index))]]], contentType: "application/merge-patch+json")
            }
            double.call("DELETE", "/api/v1/namespaces/default/pods/a2")
            #expect(await eventually { informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["n"] == "9" })
            #expect(await eventually { informer.object(ObjectKey(namespace: "default", name: "a2")) == nil })
            let batch = await changes.next() ?? []
            #expect(batch == [ObjectKey(namespace: "default", name: "a1"), ObjectKey(namespace: "default", name: "a2")])
            #expect(await eventually { informer.statistics.bookmarks > 0 })
            let watch = try #require(double.requests.first { $0.query["watch"] == "true" })
            #expect(watch.query["allowWatchBookmarks"] == "true")
            #expect(watch.query["fieldSelector"] == "spec.nodeName=node-a")
            #expect(watch.query["timeoutSeconds"] == "30")
            #expect(watch.query["resourceVersion"] == informer.statistics.resourceVersion.map { _ in lists.last?.query["resourceVersion"] } ?? nil || watch.query["resourceVersion"] != nil)
        }
    }

    @Test func watchClosedByTheServer_resumesFromTheLastVersion() async throws {
        try await withInformer { double, informer in
            try double.create("pods", namespace: "default", podJSON("a1"))
            await informer.waitForSync()
            #expect(await eventually { double.openWatches == 1 })
            double.call("PATCH", "/api/v1/namespaces/default/pods/a1", body: ["metadata": ["labels": ["x": "1"]]], contentType: "application/merge-patch+json")
            #expect(await eventually { informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["x"] == "1" })
            let seen = try #require(informer.statistics.resourceVersion)
            double.closeWatches()
            #expect(await eventually { double.requests.filter { $0.query["watch"] == "true" }.count == 2 })
            let resumed = try #require(double.requests.last { $0.query["watch"] == "true" })
            #expect(resumed.query["resourceVersion"] == seen)
            #expect(informer.statistics.lists == 1)
            try double.create("pods", namespace: "default", podJSON("a2"))
            #expect(await eventually { informer.object(ObjectKey(namespace: "default", name: "a2")) != nil })
        }
    }

    @Test(arguments: [false, true])
    func goneAfterCompaction_listsAgain(httpStatus: Bool) async throws {
        try await withInformer(settings: { $0.goneAsHTTPStatus = httpStatus }) { double, informer in
            try double.create("pods", namespace: "default", podJSON("a1"))
            try double.create("pods", namespace: "default", podJSON("a2"))
            await informer.waitForSync()
            #expect(await eventually { double.openWatches == 1 })
            // The server goes away, history is compacted meanwhile, a pod is deleted.
            await double.stopListening()
            double.call("DELETE", "/api/v1/namespaces/default/pods/a2")
            try double.create("pods", namespace: "default", podJSON("a3"))
            for _ in 0..<3 { double.call("PATCH", "/api/v1/namespaces/default/pods/a1", body: ["metadata": ["labels": ["y": "1"]]], contentType: "application/merge-patch+json") }
            double.compact()
            try await double.startListening()
            #expect(await eventually { informer.statistics.relistsAfterGone == 1 })
            #expect(await eventually { informer.statistics.lists == 2 })
            #expect(await eventually { Set(informer.objects.map { $0.metadata.name ?? "" }) == ["a1", "a3"] })
            #expect(informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["y"] == "1")
        }
    }

    @Test func throttledAndFailingLists_backOff_thenSync() async throws {
        let sleeper = SleepRecorder()
        try await withInformer(sleeper: sleeper) { double, informer in
            // Recreate the situation before the first list: the informer may have listed already, so
            // drive the faults through a watch reconnect instead.
            await informer.waitForSync()
            #expect(await eventually { double.openWatches == 1 })
            await double.stopListening()
            double.compact()
            double.failNext(4, status: 429, retryAfterSeconds: 3, pathPrefix: "/api/v1/pods")
            double.failNext(3, status: 500, pathPrefix: "/api/v1/pods")
            try double.create("pods", namespace: "default", podJSON("late"))
            try await double.startListening()
            #expect(await eventually(.seconds(30)) { informer.object(ObjectKey(namespace: "default", name: "late")) != nil })
            let sleeps = sleeper.sleeps
            // 429 beyond the client's 3 retries: the informer waits at least Retry-After (3 s).
            #expect(sleeps.filter { $0 == .seconds(3) }.count >= 3)
            #expect(sleeps.contains { $0 >= .seconds(3) })
            // 500s: exponential backoff with jitter (each within [base, 1.5 × base]).
            let backoffs = sleeps.filter { $0 != .seconds(3) }
            #expect(backoffs.count >= 3)
            for (index, delay) in backoffs.prefix(3).enumerated() where index > 0 {
                #expect(delay >= backoffs[index - 1] / 2)
            }
            #expect(informer.statistics.failures >= 4)
        }
    }

    @Test func silentWatch_isGivenUp_andTheInformerRecovers() async throws {
        let options = InformerOptions(fieldSelector: "spec.nodeName=node-a", watchTimeoutSeconds: 1, backoff: Backoff(initial: .milliseconds(50)))
        try await withInformer(options: options) { double, informer in
            await informer.waitForSync()
            let before = informer.statistics.watches
            // The server ignores timeoutSeconds by delaying answers; watches keep being renewed.
            #expect(await eventually(.seconds(15)) { informer.statistics.watches >= before + 2 })
            try double.create("pods", namespace: "default", podJSON("a9"))
            #expect(await eventually { informer.object(ObjectKey(namespace: "default", name: "a9")) != nil })
        }
    }
}
