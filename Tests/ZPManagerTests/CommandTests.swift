// The command line: the original's spelling, Go-style booleans, refusals naming the flag.
import ArgumentParser
import Foundation
import Testing
import Yams
import ZPCore

@testable import ZPManager

@Suite struct CommandTests {
    private func parse(_ arguments: [String]) throws -> ManagerCommand {
        try ManagerCommand.parse(try ManagerCommand.normalize(arguments))
    }

    @Test func originalSpelling_isAccepted() throws {
        let command = try parse([
            "-metrics-addr=:9090", "-node-server-addr", ":8091", "-status-labels", "-status-events",
            "-in-place-scaling",
            "-kubeconfig=/tmp/kc",
        ])
        #expect(command.metricsAddress == ":9090")
        #expect(command.nodeServerAddress == ":8091")
        #expect(command.statusLabels && command.statusEvents && command.inPlaceScaling)
        #expect(command.kubeconfig == "/tmp/kc")
        let configuration = try command.configuration(environment: [
            "NODE_NAME": "n1", "POD_IP": "10.0.0.5", "ZEROPOD_NODE_CONFIG": "/nonexistent",
        ])
        #expect(configuration.metricsAddress == (try ListenAddress(parsing: "0.0.0.0:9090", flag: "x")))
        #expect(configuration.nodeName == "n1")
        #expect(configuration.podIP == "10.0.0.5")
        #expect(configuration.needsKubernetes)
    }

    @Test func doubleDash_andDefaults() throws {
        let command = try parse(["--status-labels"])
        #expect(command.metricsAddress == ":8080")
        #expect(command.nodeServerAddress == ":8090")
        #expect(command.statusLabels && !command.statusEvents && !command.inPlaceScaling)
    }

    @Test func goBooleans() throws {
        #expect(try parse(["-status-labels=true"]).statusLabels)
        #expect(try !parse(["-status-labels=false"]).statusLabels)
        #expect(try parse(["--in-place-scaling=1"]).inPlaceScaling)
        #expect(throws: ValidationError.self) { try ManagerCommand.normalize(["-status-events=maybe"]) }
    }

    @Test func refusals_nameTheInput() throws {
        func message(
            _ arguments: [String],
            environment: [String: String] = ["ZEROPOD_NODE_CONFIG": "/nonexistent"]
        ) -> String {
            do {
                _ = try parse(arguments).configuration(environment: environment)
                return ""
            } catch {
                return ManagerCommand.message(for: error)
            }
        }
        #expect(message(["-metrics-addr=8080"]).contains("-metrics-addr \"8080\""))
        #expect(message(["-node-server-addr=:99999"]).contains("-node-server-addr"))
        #expect(message(["-status-labels"]).contains("NODE_NAME is not set"))
        #expect(message(["-run-dir=relative"]).contains("-run-dir"))
        #expect(message(["-node-config=/nonexistent/node.conf"]).contains("-node-config /nonexistent/node.conf"))
        #expect(message(["-unknown-flag"]).contains("unknown-flag"))
    }

    /// The manager's arguments in config/ (the DaemonSet's base args plus each component's patch)
    /// are accepted, and give the configuration the components promise.
    @Test func configArguments_parse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let daemonSet = try String(
            contentsOf: root.appendingPathComponent("config/base/node-daemonset.yaml"),
            encoding: .utf8
        )
        let document = try #require(try Yams.load(yaml: daemonSet) as? [String: Any])
        let spec = ((document["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
        let manager = (spec?["containers"] as? [[String: Any]])?.first { $0["name"] as? String == "manager" }
        var arguments = try #require(manager?["args"] as? [String])
        for component in ["status-labels", "status-events", "in-place-scaling"] {
            let text = try String(
                contentsOf: root.appendingPathComponent("config/components/\(component)/kustomization.yaml"),
                encoding: .utf8
            )
            let values = text.split(separator: "\n").compactMap { line -> String? in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                return trimmed.hasPrefix("value: -") ? String(trimmed.dropFirst("value: ".count)) : nil
            }
            #expect(values == ["-\(component)"])
            arguments += values
        }
        let configuration = try parse(arguments).configuration(environment: [
            "NODE_NAME": "n1", "POD_IP": "10.0.0.1", "ZEROPOD_NODE_CONFIG": "/nonexistent",
        ])
        #expect(configuration.metricsAddress.port == 8080 && configuration.nodeServerAddress.port == 8090)
        #expect(
            configuration.features == PodFeatures(statusLabels: true, inPlaceScaling: true)
                && configuration.statusEvents
        )
        let env = (manager?["env"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
        #expect(env.contains("NODE_NAME") && env.contains("POD_IP"))
        // The status sockets' folder is mounted where the node settings' default run-dir says.
        let mounts = (manager?["volumeMounts"] as? [[String: Any]])?.compactMap { $0["mountPath"] as? String } ?? []
        #expect(mounts.contains(NodeLayout().runDirectory) && mounts.contains("/etc/zeropod"))
    }

    @Test func nodeSettings_giveTheStatusSocketFolder() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("zpm-node-\(UUID().uuidString).conf")
            .path
        try "run-dir = /run/zp-test\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let configuration = try parse(["-node-config", file]).configuration(environment: [:])
        #expect(configuration.layout.statusSocketDirectory == "/run/zp-test/s")
        #expect(!configuration.needsKubernetes)
        try "run-dir = relative\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ValidationError.self) { try parse(["-node-config", file]).configuration(environment: [:]) }
        let overridden = try parse(["-node-config", file, "-run-dir=/run/other"])
        #expect(throws: ValidationError.self) { try overridden.configuration(environment: [:]) }
    }
}

@Suite struct WorkQueueTests {
    @Test func dirtyTwice_isReconciledOnce_andComesBackIfDirtiedWhileProcessing() async {
        let queue = WorkQueue()
        let key = PodKey(namespace: "ns", name: "p")
        queue.markDirty(key)
        queue.markDirty(key)
        let first = await queue.nextPod()
        #expect(first == key)
        #expect(queue.pendingPods.dirty == 0)
        queue.markDirty(key)  // while processing
        #expect(queue.pendingPods.dirty == 0)
        queue.done(key)
        #expect(queue.pendingPods.dirty == 1)
        #expect(await queue.nextPod() == key)
        queue.done(key, retryAfter: .milliseconds(10))
        #expect(queue.pendingPods.delayed == 1)
        #expect(queue.promoteDueRetries(now: .now + .seconds(1)) == 1)
        #expect(await queue.nextPod() == key)
    }

    @Test func events_areBounded_oldestDropped() async {
        let queue = WorkQueue(eventCapacity: 3)
        let key = PodKey(namespace: "ns", name: "p")
        for i in 0..<5 {
            queue.enqueue(
                PendingEvent(
                    occurrence: .wouldRestore,
                    container: "c",
                    containerID: "id",
                    pod: key,
                    podUID: "",
                    time: Int64(i),
                    identity: "\(i)"
                )
            )
        }
        #expect(queue.eventCounts.pending == 3)
        #expect(queue.eventCounts.dropped == 2)
        #expect(await queue.nextEvent()?.identity == "2")
        queue.finish()
        #expect(await queue.nextEvent()?.identity == "3")
    }

    @Test func finish_wakesWaiters() async {
        let queue = WorkQueue()
        async let waiting = queue.nextPod()
        try? await Task.sleep(for: .milliseconds(50))
        queue.finish()
        #expect(await waiting == nil)
    }
}
