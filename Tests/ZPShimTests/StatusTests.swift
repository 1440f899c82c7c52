import Foundation
import Logging
import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPTTRPC
import ZPTestSupport

@testable import ZPShim

/// A settable wall clock for the board.
final class TestClock: Sendable {
    private let value = Mutex<Int64>(1_700_000_000_000_000_000)
    var now: Int64 { value.withLock { $0 } }
    func advance(_ nanoseconds: Int64) { value.withLock { $0 += nanoseconds } }
}

@Suite struct StatusBoardTests {
    /// Reads `count` entries from a subscription, with a deadline.
    static func take(_ count: Int, from subscription: StatusSubscription) async throws -> [StatusAPI.StatusChange] {
        try await withThrowingTaskGroup(of: [StatusAPI.StatusChange].self) { group in
            group.addTask {
                var out: [StatusAPI.StatusChange] = []
                for await change in subscription {
                    out.append(change)
                    if out.count == count { break }
                }
                return out
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                throw CancellationError()
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }

    @Test func dryRunEvents_countInTheMetrics_andKeepThePhase() {
        let board = ShimStatusBoard(now: { 1_790_000_000_000_000_000 })
        board.register(id: "d1", annotations: ["io.kubernetes.cri.container-name": "web"])
        board.update(id: "d1", phase: .running, pid: 7)
        board.update(id: "d1", phase: .running, event: .wouldScaleDown)
        board.update(id: "d1", phase: .running, event: .wouldScaleDown)
        board.update(id: "d1", phase: .running, event: .wouldRestore)
        let m = board.metrics().first
        #expect(m?.dryRunScaleDownsTotal == 2 && m?.dryRunWouldRestoresTotal == 1)
        #expect(m?.running == true && m?.checkpointDuration.count == 0)
        #expect(board.status(id: "d1")?.phase == .running && board.status(id: "d1")?.lastCheckpoint == nil)
    }

    @Test func register_andUpdates_recordLabelsPhasesAndOperations() {
        let clock = TestClock()
        let board = ShimStatusBoard(now: { clock.now })
        board.register(
            id: "c1",
            annotations: [
                "io.kubernetes.cri.container-name": "web", "io.kubernetes.cri.sandbox-name": "nginx-0",
                "io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.sandbox-uid": "u-1",
            ]
        )
        board.update(id: "c1", phase: .running, pid: 100)
        let runningSince = clock.now
        clock.advance(5_000_000_000)
        board.update(id: "c1", pid: 100)  // same pid and phase: phase_since stays
        var s = board.status(id: "c1")
        #expect(s?.name == "web" && s?.podName == "nginx-0" && s?.podNamespace == "default" && s?.podUID == "u-1")
        #expect(s?.lifecyclePhase == .running && s?.pid == 100 && s?.phaseSince?.unixNanoseconds == runningSince)

        board.update(id: "c1", phase: .checkpointing)
        clock.advance(80_000_000)
        board.update(id: "c1", phase: .scaledDown, event: .checkpointFinished(duration: .milliseconds(80)))
        s = board.status(id: "c1")
        #expect(s?.phase == .scaledDown && s?.phaseSince?.unixNanoseconds == clock.now)
        #expect(
            s?.lastCheckpoint
                == StatusAPI.Operation(
                    finishedAt: ProtobufTimestamp(unixNanoseconds: clock.now),
                    duration: .milliseconds(80)
                )
        )

        board.update(id: "c1", phase: .restoring)
        board.update(id: "c1", phase: .running, pid: 101, event: .restoreFinished(duration: .milliseconds(30)))
        board.update(id: "c1", phase: .running, event: .checkpointFailed(reason: "criu: dump failed"))
        s = board.status(id: "c1")
        #expect(s?.pid == 101 && s?.lastRestore?.duration == .milliseconds(30))
        #expect(s?.checkpointErrors == 1 && s?.restoreErrors == 0 && s?.lastError == "checkpoint: criu: dump failed")

        let m = board.metrics()
        #expect(m.count == 1)
        #expect(m.first?.running == true && m.first?.name == "web")
        #expect(m.first?.checkpointDuration.count == 1 && m.first?.restoreDuration.count == 1)
        #expect(m.first?.checkpointDuration.cumulativeCounts[2] == 1)  // 80 ms <= 0.1 s
        #expect(m.first?.checkpointErrorsTotal == 1)
        #expect(m.first?.lastRestoreTime != nil)

        // Unknown ids are added on the fly; list is ordered by id.
        board.update(id: "a0", phase: .running, pid: 5)
        #expect(board.list().map(\.id) == ["a0", "c1"])
        board.remove(id: "c1")
        board.remove(id: "nope")
        #expect(board.list().map(\.id) == ["a0"])
        #expect(board.status(id: "c1") == nil)
    }

    @Test func record_followsTheLifecycleStateMachine() {
        // Drive ZPCore's real state machine and report each event with the phase it reached.
        let board = ShimStatusBoard()
        var lifecycle = ContainerLifecycle(configuration: .init(scaleDownDuration: .seconds(1)))
        func feed(_ event: ContainerLifecycle.Event) {
            _ = lifecycle.event(event)
            board.record(id: "c1", event: event, phase: lifecycle.phase)
        }
        let t0 = ZPInstant(nanoseconds: 1_000_000_000)
        feed(.started(pid: 10, now: t0))
        #expect(board.status(id: "c1")?.lifecyclePhase == .running && board.status(id: "c1")?.pid == 10)
        feed(.idleDeadlineReached(lastActivity: nil, now: t0.advanced(by: .seconds(2))))
        #expect(board.status(id: "c1")?.lifecyclePhase == .checkpointing)
        feed(.checkpointFinished(duration: .milliseconds(60)))
        #expect(
            board.status(id: "c1")?.phase == .scaledDown
                && board.status(id: "c1")?.lastCheckpoint?.duration == .milliseconds(60)
        )
        feed(.connectionArrived)
        #expect(board.status(id: "c1")?.lifecyclePhase == .restoring)
        feed(.restoreFinished(pid: 11, duration: .milliseconds(35), now: t0.advanced(by: .seconds(3))))
        let s = board.status(id: "c1")
        #expect(s?.lifecyclePhase == .running && s?.pid == 11 && s?.lastRestore?.duration == .milliseconds(35))
        let m = board.metrics().first
        #expect(m?.running == true && m?.checkpointDuration.count == 1 && m?.restoreDuration.count == 1)
    }

    @Test func twoSubscribers_bothSeeEveryChange_inOrder() async throws {
        let board = ShimStatusBoard()
        let a = board.subscribe()
        let b = board.subscribe()
        #expect(board.subscriberCount == 2)
        board.update(id: "c1", phase: .running, pid: 1)
        board.update(id: "c1", phase: .running, pid: 1)  // no change: not published
        board.update(id: "c1", phase: .checkpointing)
        board.update(id: "c1", phase: .scaledDown, event: .checkpointFinished(duration: .milliseconds(50)))
        board.remove(id: "c1")
        let seenA = try await Self.take(4, from: a)
        let seenB = try await Self.take(4, from: b)
        for seen in [seenA, seenB] {
            #expect(seen.map(\.sequence) == [1, 2, 3, 4])
            #expect(seen.map(\.missed) == [0, 0, 0, 0])
            #expect(seen.map(\.status.lifecyclePhase) == [.running, .checkpointing, .scaledDown, .scaledDown])
            #expect(seen[2].event == .checkpointFinished(duration: .milliseconds(50)))
            #expect(seen.map(\.removed) == [false, false, false, true])
        }
    }

    @Test func slowSubscriber_losesTheOldest_andIsToldHowMany_whileAFastOneLosesNothing() async throws {
        let board = ShimStatusBoard()
        let slow = board.subscribe(capacity: 4)
        let fast = board.subscribe()
        for pid in Int32(1)...10 { board.update(id: "c1", phase: .running, pid: pid) }
        let slowSeen = try await Self.take(4, from: slow)
        #expect(slowSeen.map(\.sequence) == [7, 8, 9, 10])
        #expect(slowSeen.map(\.missed) == [6, 0, 0, 0])
        #expect(slowSeen.map(\.status.pid) == [7, 8, 9, 10])
        let fastSeen = try await Self.take(10, from: fast)
        #expect(fastSeen.map(\.sequence) == Array(1...10))
        #expect(fastSeen.allSatisfy { $0.missed == 0 })
    }

    @Test func lossInTheMiddle_isReportedOnTheNextChangeRead() async throws {
        let board = ShimStatusBoard()
        let subscription = board.subscribe(capacity: 2)
        var iterator = subscription.makeAsyncIterator()
        board.update(id: "c1", phase: .running, pid: 1)
        #expect(await iterator.next()?.missed == 0)
        for pid in Int32(2)...6 { board.update(id: "c1", pid: pid) }  // 5 changes into a buffer of 2
        let next = await iterator.next()
        #expect(next?.sequence == 5 && next?.missed == 3)
        #expect(await iterator.next()?.missed == 0)
    }

    @Test func initialSnapshot_comesFirst_thenChanges() async throws {
        let board = ShimStatusBoard()
        board.update(id: "b", phase: .scaledDown, pid: 2)
        board.update(id: "a", phase: .running, pid: 1)
        let subscription = board.subscribe(initialSnapshot: true)
        board.update(id: "a", phase: .checkpointing)
        let seen = try await Self.take(3, from: subscription)
        #expect(seen.map(\.snapshot) == [true, true, false])
        #expect(seen.map(\.status.id) == ["a", "b", "a"])
        #expect(seen[2].sequence == 3 && seen[2].missed == 0)
    }

    @Test func cancelledConsumer_unsubscribes_andFinishEndsTheRest() async throws {
        let board = ShimStatusBoard()
        let waiting = Task {
            var n = 0
            for await _ in board.subscribe() { n += 1 }
            return n
        }
        #expect(await Self.poll { board.subscriberCount == 1 })
        waiting.cancel()
        _ = await waiting.value
        #expect(await Self.poll { board.subscriberCount == 0 })

        let ended = board.subscribe()
        board.update(id: "c1", phase: .running)
        board.finishSubscriptions()
        var count = 0
        for await _ in ended { count += 1 }
        #expect(count == 1)  // the buffered change, then the end
        #expect(board.subscriberCount == 0)
    }

    static func poll(within seconds: Double = 30, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }
}

@Suite struct StatusServiceTests {
    /// Runs the service for `body` on a fresh socket under a fresh folder in /tmp.
    static func withService(
        _ board: ShimStatusBoard,
        capacity: Int = 128,
        _ body: @Sendable (_ path: String) async throws -> Void
    ) async throws {
        let dir = "/tmp/zpstatus-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let path = dir + "/s/shim.sock"
        defer {
            rmdir(dir + "/s")
            rmdir(dir)
        }
        let service = ShimStatusService(board: board, subscriberCapacity: capacity)
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await service.run(
                    socketPath: path,
                    group: MultiThreadedEventLoopGroup.singleton,
                    logger: Logger(label: "test")
                ) {
                    readyContinuation.yield()
                }
            }
            for await _ in ready { break }
            do {
                try await body(path)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
            try? await group.waitForAll()
        }
        #expect(access(path, F_OK) != 0, "the socket file must be removed when the service stops")
    }

    @Test func unaryMethods_overARealSocket() async throws {
        let board = ShimStatusBoard()
        board.register(
            id: "c1",
            annotations: [
                "io.kubernetes.cri.container-name": "web", "io.kubernetes.cri.sandbox-name": "p",
                "io.kubernetes.cri.sandbox-namespace": "ns",
            ]
        )
        board.update(id: "c1", phase: .running, pid: 321)
        board.update(id: "c1", phase: .scaledDown, event: .checkpointFinished(duration: .milliseconds(70)))
        board.update(id: "c2", phase: .running, pid: 9)
        try await Self.withService(board) { path in
            var st = stat()
            #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600, "socket mode")
            let dir = String(path.dropLast("/shim.sock".count))
            #expect(stat(dir, &st) == 0 && st.st_mode & 0o777 == 0o700, "folder mode")

            let client = try await ShimStatusClient.connect(
                socketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            let status = try await client.status(id: "c1")
            #expect(
                status.name == "web" && status.phase == .scaledDown && status.lifecyclePhase == .scaledDown
                    && status.pid == 321
            )
            #expect(status.lastCheckpoint?.duration == .milliseconds(70))
            #expect(try await client.list().map(\.id) == ["c1", "c2"])
            let metrics = try await client.metrics()
            #expect(metrics.map(\.running) == [false, true])
            #expect(metrics.first?.checkpointDuration.count == 1)
            await #expect { _ = try await client.status(id: "nope") } throws: { error in
                let e = error as? TTRPCStatusError
                return e?.code == .notFound && (e?.message.contains("nope") ?? false)
            }
            await #expect { _ = try await client.status(id: "") } throws: {
                ($0 as? TTRPCStatusError)?.code == .invalidArgument
            }
            await client.close()
        }
    }

    @Test func subscribeStatus_streamsToTwoClients_withSnapshot() async throws {
        let board = ShimStatusBoard()
        board.update(id: "c1", phase: .running, pid: 1)
        try await Self.withService(board) { path in
            let group = MultiThreadedEventLoopGroup.singleton
            let one = try await ShimStatusClient.connect(socketPath: path, group: group)
            let two = try await ShimStatusClient.connect(socketPath: path, group: group)
            var first = one.subscribe(initialSnapshot: true).makeAsyncIterator()
            var second = two.subscribe().makeAsyncIterator()
            let snapshot = try await first.next()
            #expect(snapshot?.snapshot == true && snapshot?.status.id == "c1")
            // Both streams are open on the server before the changes are made.
            #expect(await StatusBoardTests.poll { board.subscriberCount == 2 })
            board.update(id: "c1", phase: .checkpointing)
            board.update(id: "c1", phase: .scaledDown, event: .checkpointFinished(duration: .milliseconds(90)))
            board.update(id: "c1", phase: .restoring)
            board.update(id: "c1", phase: .running, pid: 2, event: .restoreFinished(duration: .milliseconds(25)))
            var a: [StatusAPI.StatusChange] = []
            var b: [StatusAPI.StatusChange] = []
            for _ in 0..<4 {
                a.append(try #require(try await first.next()))
                b.append(try #require(try await second.next()))
            }
            #expect(a == b)
            #expect(a.map(\.sequence) == [2, 3, 4, 5] && a.allSatisfy { $0.missed == 0 && !$0.snapshot })
            #expect(a.map(\.status.lifecyclePhase) == [.checkpointing, .scaledDown, .restoring, .running])
            #expect(a[3].event == .restoreFinished(duration: .milliseconds(25)) && a[3].status.pid == 2)
            // Closing a client ends its stream on the server (the board forgets the subscriber).
            await one.close()
            #expect(await StatusBoardTests.poll { board.subscriberCount == 1 })
            // Shutdown: finishing the board's subscriptions ends the other stream normally.
            board.finishSubscriptions()
            #expect(try await second.next() == nil)
            await two.close()
        }
    }

    @Test func peerWithAnotherUID_isRefused() async throws {
        let board = ShimStatusBoard()
        board.update(id: "c1", phase: .running, pid: 1)
        try await Self.withService(board) { path in
            // Open the folder and the socket for a moment so that uid 65534 can connect at all;
            // then SO_PEERCRED must refuse it.
            let dir = String(path.dropLast("/shim.sock".count))
            let top = String(dir.dropLast("/s".count))
            chmod(top, 0o755)
            chmod(dir, 0o755)
            chmod(path, 0o666)
            defer {
                chmod(path, 0o600)
                chmod(dir, 0o700)
            }
            let request = TTRPCRequest(service: StatusAPI.service, method: StatusAPI.listContainers, payload: [])
            let frame = try TTRPCFrameCodec.encode(TTRPCFrame(streamID: 1, type: .request, payload: request.encoded()))
            let hex = frame.map { String(format: "%02x", $0) }.joined()
            let script = """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(sys.argv[1])
                try:
                    s.sendall(bytes.fromhex(sys.argv[2]))
                    data = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""  # refused before or after the request went out
                print(len(data))
                """
            let asNobody = try await runOffThePool(
                [
                    "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script,
                    path, hex,
                ],
                timeout: 20
            )
            #expect(
                asNobody.status == 0,
                "python as nobody: \(asNobody.stderr.split(separator: "\n").suffix(3).joined(separator: " / "))"
            )
            #expect(
                asNobody.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0",
                "a foreign uid got an answer"
            )
            let asRoot = try await runOffThePool(["/usr/bin/python3", "-c", script, path, hex], timeout: 20)
            #expect(
                Int(asRoot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 10,
                "root got no answer: \(asRoot.stderr)"
            )
        }
    }
}
