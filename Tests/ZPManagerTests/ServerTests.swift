// The metrics endpoint over real HTTP, and the shim folder watcher on a real folder.
import Foundation
import Logging
import Synchronization
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPManager

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite struct ServerTests {
    @Test func metricsEndpoint_servesTheExposition_andHealth() async throws {
        let metrics = ZeropodMetrics()
        metrics.update(
            ContainerMetricsSample(id: "c1", container: "app", pod: "web", namespace: "default", running: true)
        )
        let server = MetricsServer(host: "127.0.0.1", port: 0, logger: testLogger(), render: { metrics.exposition() })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let port = await server.boundPort()
            let (body, response) = try await URLSession.shared.data(
                from: URL(string: "http://127.0.0.1:\(port)/metrics")!
            )
            let http = response as! HTTPURLResponse
            #expect(http.statusCode == 200)
            #expect(http.value(forHTTPHeaderField: "Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(
                String(decoding: body, as: UTF8.self).contains(
                    #"zeropod_running{container="app",pod="web",namespace="default"} 1"#
                )
            )
            let (_, health) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/healthz")!)
            #expect((health as! HTTPURLResponse).statusCode == 200)
            let (_, missing) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/nope")!)
            #expect((missing as! HTTPURLResponse).statusCode == 404)
            group.cancelAll()
        }
    }

    @Test func directoryWatcher_seesSocketsComeAndGo_withoutListingEveryTick() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        let watcher = ShimDirectory(layout: run.layout, tick: .milliseconds(20), rescanInterval: .seconds(60))
        final class Seen: Sendable {
            let sets = Mutex<[Set<String>]>([])
            let stats = Mutex(ShimDirectory.Statistics())
        }
        let seen = Seen()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await watcher.run(logger: testLogger(), statistics: { s in seen.stats.withLock { $0 = s } }) { set in
                    seen.sets.withLock { $0.append(set) }
                }
            }
            #expect(await eventuallyAsync { seen.sets.withLock { $0.count } == 1 })
            _ = FileManager.default.createFile(atPath: run.socket("x1"), contents: nil)
            _ = FileManager.default.createFile(atPath: run.path + "/s/not-a-socket.txt", contents: nil)
            #expect(await eventuallyAsync { seen.sets.withLock { $0.last } == [run.socket("x1")] })
            try FileManager.default.removeItem(atPath: run.socket("x1"))
            #expect(await eventuallyAsync { seen.sets.withLock { $0.last } == [] })
            try await Task.sleep(for: .milliseconds(300))
            let stats = seen.stats.withLock { $0 }
            #expect(stats.usingInotify)
            // ~15 ticks passed; only the start and the three changes caused listings.
            #expect(stats.listings <= 5)
            group.cancelAll()
        }
    }
}
