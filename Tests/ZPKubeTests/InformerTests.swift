import Foundation
import KubeAPIDouble
import Synchronization
import Testing
import ZPKube
import ZPTestSupport

/// The informer (list + watch of the pods on one node) against the API double: resume, relist on
/// 410, backoff on 429/500, recovery from an unreachable server, coalesced changes.
@Suite struct InformerTests {
    /// Runs an informer for node-a's pods in a task group while `body` drives the double.
    func withInformer(
        settings change: @escaping (inout KubeAPIDouble.Settings) -> Void = { _ in },
        sleeper: SleepRecorder = SleepRecorder(),
        client configure: (inout KubeConfiguration) -> Void = { _ in },
        options: InformerOptions = InformerOptions(
            fieldSelector: "spec.nodeName=node-a",
            pageSize: 2,
            watchTimeoutSeconds: 30,
            backoff: Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        ),
        seed: (KubeAPIDouble) throws -> Void = { _ in },
        _ body: @escaping @Sendable (KubeAPIDouble, Informer<Pod>) async throws -> Void
    ) async throws {
        try await withDoubleAndClient(
            settings: {
                $0.bookmarkInterval = .milliseconds(200)
                change(&$0)
            },
            client: configure,
            sleeper: sleeper
        ) { double, client in
            try seed(double)
            let informer = Informer<Pod>(client: client, resource: .pods, options: options)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await informer.run() }
                defer { group.cancelAll() }
                try await body(double, informer)
            }
        }
    }

    @Test func listsThenWatches_onlyThisNode_andCoalescesChanges() async throws {
        let seeded = Mutex<Int64>(0)
        try await withInformer(seed: { double in
            for name in ["a1", "a2", "a3"] {
                try double.create("pods", namespace: "default", podJSON(name, node: "node-a"))
            }
            try double.create("pods", namespace: "default", podJSON("b1", node: "node-b"))
            seeded.withLock { $0 = double.resourceVersion }
        }) { double, informer in
            await informer.waitForSync()
            #expect(Set(informer.objects.map { $0.metadata.name ?? "" }) == ["a1", "a2", "a3"])
            var changes = informer.changes().makeAsyncIterator()
            let first = await changes.next()
            #expect(
                Set(first ?? []) == [
                    ObjectKey(namespace: "default", name: "a1"), ObjectKey(namespace: "default", name: "a2"),
                    ObjectKey(namespace: "default", name: "a3"),
                ]
            )
            // Two pages of two (limit 2), with the field selector, then a watch from the list's version.
            let lists = double.requests.filter { $0.path == "/api/v1/pods" && $0.query["watch"] == nil }
            #expect(lists.count == 2)
            #expect(
                lists.allSatisfy { $0.query["fieldSelector"] == "spec.nodeName=node-a" && $0.query["limit"] == "2" }
            )
            #expect(await eventuallyAsync { double.openWatches == 1 })

            // Ten label changes to one pod while nobody reads: one key in the next batch.
            for index in 0..<10 {
                double.call(
                    "PATCH",
                    "/api/v1/namespaces/default/pods/a1",
                    body: ["metadata": ["labels": ["n": .string(String(index))]]],
                    contentType: "application/merge-patch+json"
                )
            }
            double.call("DELETE", "/api/v1/namespaces/default/pods/a2")
            #expect(
                await eventuallyAsync {
                    informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["n"] == "9"
                }
            )
            #expect(await eventuallyAsync { informer.object(ObjectKey(namespace: "default", name: "a2")) == nil })
            let batch = await changes.next() ?? []
            #expect(
                batch == [ObjectKey(namespace: "default", name: "a1"), ObjectKey(namespace: "default", name: "a2")]
            )
            #expect(await eventuallyAsync { informer.statistics.bookmarks > 0 })
            let watch = try #require(double.requests.first { $0.query["watch"] == "true" })
            #expect(watch.query["allowWatchBookmarks"] == "true")
            #expect(watch.query["fieldSelector"] == "spec.nodeName=node-a")
            #expect(watch.query["timeoutSeconds"] == "30")
            // The first watch starts at the list's resourceVersion (nothing changed in between).
            #expect(watch.query["resourceVersion"] == String(seeded.withLock { $0 }))
        }
    }

    @Test func watchClosedByTheServer_resumesFromTheLastVersion() async throws {
        try await withInformer { double, informer in
            try double.create("pods", namespace: "default", podJSON("a1"))
            await informer.waitForSync()
            #expect(await eventuallyAsync { double.openWatches == 1 })
            double.call(
                "PATCH",
                "/api/v1/namespaces/default/pods/a1",
                body: ["metadata": ["labels": ["x": "1"]]],
                contentType: "application/merge-patch+json"
            )
            #expect(
                await eventuallyAsync {
                    informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["x"] == "1"
                }
            )
            let seen = try #require(informer.statistics.resourceVersion)
            double.closeWatches()
            #expect(await eventuallyAsync { double.requests.filter { $0.query["watch"] == "true" }.count == 2 })
            let resumed = try #require(double.requests.last { $0.query["watch"] == "true" })
            #expect(resumed.query["resourceVersion"] == seen)
            #expect(informer.statistics.lists == 1)
            try double.create("pods", namespace: "default", podJSON("a2"))
            #expect(await eventuallyAsync { informer.object(ObjectKey(namespace: "default", name: "a2")) != nil })
        }
    }

    @Test(arguments: [false, true])
    func goneAfterCompaction_listsAgain(httpStatus: Bool) async throws {
        try await withInformer(settings: { $0.goneAsHTTPStatus = httpStatus }) { double, informer in
            try double.create("pods", namespace: "default", podJSON("a1"))
            try double.create("pods", namespace: "default", podJSON("a2"))
            await informer.waitForSync()
            #expect(await eventuallyAsync { double.openWatches == 1 })
            // The server goes away, history is compacted meanwhile, a pod is deleted.
            await double.stopListening()
            double.call("DELETE", "/api/v1/namespaces/default/pods/a2")
            try double.create("pods", namespace: "default", podJSON("a3"))
            for _ in 0..<3 {
                double.call(
                    "PATCH",
                    "/api/v1/namespaces/default/pods/a1",
                    body: ["metadata": ["labels": ["y": "1"]]],
                    contentType: "application/merge-patch+json"
                )
            }
            double.compact()
            try await double.startListening()
            #expect(await eventuallyAsync { informer.statistics.relistsAfterGone == 1 })
            #expect(await eventuallyAsync { informer.statistics.lists == 2 })
            #expect(await eventuallyAsync { Set(informer.objects.map { $0.metadata.name ?? "" }) == ["a1", "a3"] })
            #expect(informer.object(ObjectKey(namespace: "default", name: "a1"))?.metadata.labels?["y"] == "1")
        }
    }

    @Test func throttledAndFailingLists_backOff_thenSync() async throws {
        let sleeper = SleepRecorder()
        try await withInformer(
            sleeper: sleeper,
            seed: { double in
                try double.create("pods", namespace: "default", podJSON("late"))
                // The first 4 requests are throttled (the client retries 3 times, then the informer
                // waits), the next 3 fail with 500.
                double.failNext(4, status: 429, retryAfterSeconds: 3, pathPrefix: "/api/v1/pods")
                double.failNext(3, status: 500, pathPrefix: "/api/v1/pods")
            }
        ) { double, informer in
            #expect(
                await eventuallyAsync(within: 30) {
                    informer.object(ObjectKey(namespace: "default", name: "late")) != nil
                }
            )
            #expect(informer.hasSynced)
            let sleeps = sleeper.sleeps
            // Three client retries after Retry-After, then the informer's own wait: at least the
            // Retry-After (its first backoff, 100-150 ms, is shorter).
            #expect(Array(sleeps.prefix(4)) == [.seconds(3), .seconds(3), .seconds(3), .seconds(3)])
            // Then the 500s: the backoff continues to double, with up to 50 % jitter.
            let backoffs = Array(sleeps.dropFirst(4))
            #expect(backoffs.count == 3)
            for (delay, base) in zip(backoffs, [200, 400, 800]) {
                #expect(delay >= .milliseconds(base) && delay <= .milliseconds(base * 3 / 2), "\(backoffs)")
            }
            #expect(informer.statistics.failures == 4)
            #expect(informer.statistics.lists == 1)
        }
    }

    @Test func watchTimeout_isHonoured_andWatchesAreRenewed() async throws {
        let options = InformerOptions(
            fieldSelector: "spec.nodeName=node-a",
            watchTimeoutSeconds: 1,
            backoff: Backoff(initial: .milliseconds(50))
        )
        try await withInformer(options: options) { double, informer in
            await informer.waitForSync()
            #expect(await eventuallyAsync { informer.statistics.watches >= 3 })
            let watches = double.requests.filter { $0.query["watch"] == "true" }
            #expect(watches.allSatisfy { $0.query["timeoutSeconds"] == "1" })
            #expect(informer.statistics.failures == 0)
            #expect(informer.statistics.lists == 1)
        }
    }

    @Test func hungServer_watchIsGivenUp_slowServer_requestTimesOut_thenRecovers() async throws {
        let options = InformerOptions(
            fieldSelector: "spec.nodeName=node-a",
            watchTimeoutSeconds: 1,
            backoff: Backoff(initial: .milliseconds(50))
        )
        try await withInformer(
            settings: {
                $0.honourWatchTimeout = false
                $0.bookmarkInterval = .seconds(3600)
            },
            client: {
                $0.watchGrace = .milliseconds(500)
                $0.requestTimeout = .milliseconds(500)
            },
            options: options
        ) { double, informer in
            await informer.waitForSync()
            // The server never ends the watch: the informer gives it up after 1 s + 0.5 s grace.
            #expect(await eventuallyAsync { informer.statistics.failures >= 1 })
            #expect(await eventuallyAsync { informer.statistics.watches >= 2 })
            // Answers slower than the request timeout: failures, then recovery once it is fast again.
            double.update { $0.responseDelay = .seconds(2) }
            let failures = informer.statistics.failures
            #expect(await eventuallyAsync { informer.statistics.failures >= failures + 2 })
            double.update { $0.responseDelay = .zero }
            try double.create("pods", namespace: "default", podJSON("a9"))
            #expect(await eventuallyAsync { informer.object(ObjectKey(namespace: "default", name: "a9")) != nil })
            #expect(informer.statistics.lists == 1)
        }
    }

    @Test func unreachableServer_theInformerRecovers() async throws {
        // async-http-client retries refused connections until the request's deadline: keep it short.
        try await withInformer(
            client: { $0.requestTimeout = .seconds(1) },
            seed: { try $0.create("pods", namespace: "default", podJSON("a1")) }
        ) { double, informer in
            await informer.waitForSync()
            #expect(await eventuallyAsync { double.openWatches == 1 })
            await double.stopListening()
            #expect(await eventuallyAsync { informer.statistics.failures >= 2 })
            double.call("DELETE", "/api/v1/namespaces/default/pods/a1")
            try double.create("pods", namespace: "default", podJSON("a2"))
            try await double.startListening()
            #expect(await eventuallyAsync { informer.object(ObjectKey(namespace: "default", name: "a2")) != nil })
            #expect(informer.object(ObjectKey(namespace: "default", name: "a1")) == nil)
            // Resumed from its resourceVersion: the history still had the changes, no new list.
            #expect(informer.statistics.lists == 1)
        }
    }
}
