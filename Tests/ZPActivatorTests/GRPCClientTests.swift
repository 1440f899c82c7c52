import Foundation
import Glibc
import NIOCore
import Synchronization
import Testing
import ZPTestSupport

@testable import ZPActivator

/// grpcio (gRPC C-core) from the venv that scripts/setup.sh makes.
private let grpcioPython = TestPaths.cache + "/grpcio/bin/python"
private let grpcProbe = TestPaths.packageRoot + "/scripts/cri/grpc-probe.py"

/// A real gRPC client against the activator (issue 18's gRPC finding): gRPC C-core, like grpc-go
/// (kubelet's prober), sends its preface and SETTINGS and waits for the server's SETTINGS before
/// the HEADERS of a call. The activator sends its SETTINGS when the preface arrives, answers the
/// health check without a restore, and forwards any other call to the restored application without
/// the client's acknowledgement of those SETTINGS.
@Suite(
    .enabled(
        if: FileManager.default.isExecutableFile(atPath: grpcioPython),
        "needs grpcio in $ZP_CACHE/grpcio (make setup)"
    )
)
struct GRPCClientTests {
    @Test func grpcioHealthCheck_whileScaledDown_isServing_withoutRestore() async throws {
        let events = EventLog<ActivatorEvent>()
        let app = try ReservedPort()
        defer { close(app.fd) }
        try await withActivator(appPort: app.port, events: events, restore: { throw TestRestoreError() }) {
            activator,
            address in
            for agent in ["kube-probe/1.36", "grpc-health-probe/0.4"] {
                let answer = try await onThread {
                    try run(
                        [grpcioPython, grpcProbe, "check", "127.0.0.1:\(address.port ?? 0)", "", agent, "5"],
                        timeout: 60
                    )
                }
                #expect(answer.trimmed == "SERVING", "\(agent): \(answer.stdout) \(answer.stderr)")
            }
            #expect(await eventuallyAsync(within: 20) { events.reports.count == 2 })
            #expect(activator.phase == .scaledDown)
        }
        #expect(events.restoresStarted == 0)
        #expect(events.reports.allSatisfy { $0.outcome == .probeAnswered(.grpcHealth) }, "\(events.reports)")
    }

    @Test func grpcioCall_isForwardedToTheRestoredServer() async throws {
        let events = EventLog<ActivatorEvent>()
        let app = try ReservedPort()
        let port = app.port
        close(app.fd)  // the gRPC server binds it when "restored"
        let serverPID = Atomic<Int32>(0)
        defer { killAndReap(serverPID.load(ordering: .relaxed)) }
        let restore: @Sendable () async throws -> Void = {
            let server = Process()
            server.executableURL = URL(fileURLWithPath: grpcioPython)
            server.arguments = [grpcProbe, "serve", "\(port)"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            serverPID.store(server.processIdentifier, ordering: .relaxed)
            let listening = eventually(within: 30) {
                (try? run(["ss", "-Htln", "sport = :\(port)"]).stdout.isEmpty) == false
            }
            if !listening { throw LabError("the gRPC server never listened on \(port)") }
        }
        try await withActivator(appPort: port, events: events, restore: restore) { _, address in
            let target = "127.0.0.1:\(address.port ?? 0)"
            let answer = try await onThread {
                try run(
                    [
                        grpcioPython, grpcProbe, "call", target, "/zp.test.Echo/Say", "hello through the activator",
                        "20",
                    ],
                    timeout: 60
                )
            }
            #expect(answer.trimmed == "hello through the activator", "\(answer.stdout) \(answer.stderr)")
            #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
        }
        #expect(events.restoresStarted == 1)
        let outcomes = events.reports.map(\.outcome)
        #expect(
            outcomes.contains {
                if case .proxied(let toApp, let toClient) = $0 { toApp > 0 && toClient > 0 } else { false }
            },
            "\(outcomes)"
        )
    }
}
