import Foundation
import Testing
import ZPCore
import ZPTestSupport

// Servers that speak first on the activator's proxy path (decision 0055), end to end through
// containerd and the shim with CRIU: a busybox `nc` server that greets every connection, with the
// listener handover off so the activator keeps the port.

/// A copy of the busybox root filesystem with `/bin/greet`: `nc -ll -p 2525 -e /bin/greet` greets
/// each connection with ``line`` and then echoes.
enum Greeter {
    static let line = "220 zp-greeter ready\n"
    static let port: UInt16 = 2525

    static func rootfs(in directory: String) throws -> String {
        let rootfs = directory + "/greeter-rootfs"
        try sh(["cp", "-a", try TestPaths.busyboxRootfs(), rootfs], timeout: 120)
        let script = rootfs + "/bin/greet"
        try "#!/bin/sh\necho \"220 zp-greeter ready\"\nexec cat\n".write(toFile: script, atomically: true, encoding: .utf8)
        try sh(["chmod", "755", script])
        return rootfs
    }

    static func command() -> [String] { ["/bin/nc", "-ll", "-p", "\(port)", "-e", "/bin/greet"] }
}

@Suite(.serialized, .enabled(if: Privileges.isRoot, "needs root: containerd, CRIU, network namespaces"))
struct SpeakFirstEndToEndTests {
    /// Connects from the client namespace and reads the greeting without sending anything.
    /// - Returns: the greeting and the milliseconds from connect to greeting.
    private static func greet(_ lab: ConnectionLab) -> (String, Double)? {
        let started = Date()
        guard
            let socket = try? TestSocket.connect(
                fromNetns: lab.client.path,
                to: lab.podClientSide,
                port: Greeter.port,
                timeout: 10
            ),
            let greeting = try? socket.receive(Greeter.line.utf8.count)
        else { return nil }
        let elapsed = Date().timeIntervalSince(started) * 1000
        socket.descriptor.close()
        return (greeting, elapsed)
    }

    /// The `first byte back after X ms` of the activator's log line for each proxied connection.
    private static func firstByteTimes(_ lines: [String]) -> [String] {
        lines.compactMap { $0.firstMatch(of: /first byte back after ([0-9.]+) ms/).map { String($0.1) } }
    }

    /// Without the annotation, restore 1 waits for the silent window and learns the port from the
    /// greeting; restore 2 greets at once. With the annotation, the first restore greets at once.
    /// Each greeting is read without the client sending a byte.
    @Test(arguments: ContainerdFlavor.all)
    func greetingServer_learnedAfterOneRestore_annotatedGreetsAtOnce(flavor: ContainerdFlavor) throws {
        let directory = try TemporaryDirectory("zpsf")
        let containerd = try PrivateContainerd(flavor: flavor, tag: "sf")
        defer { containerd.stop() }
        let lab = try ConnectionLab("sf", subnet: 40)
        defer { lab.delete() }
        let rootfs = try Greeter.rootfs(in: directory.path)
        var checkpoints = 0
        var rows: [String] = []

        func run(_ id: String, annotations: [String]) throws {
            let created = try containerd.ctr(
                [
                    "run", "-d", "--runtime", "io.containerd.zeropod.v2",
                    "--annotation", "zeropod.ctrox.dev/scaledown-duration=2s",
                    "--annotation", "zeropod-swift/listener-handover=false",
                ] + annotations.flatMap { ["--annotation", $0] } + [
                    "--with-ns", "network:\(lab.pod.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
                    "--rootfs", rootfs, id,
                ] + Greeter.command()
            )
            try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        }
        func cycle(_ label: String) throws -> Double {
            checkpoints += 1
            let down = waitScaledDown(containerd, netns: lab.pod, checkpoints: checkpoints)
            try #require(down, "\(label): not scaled down; log: \(containerd.log(tail: 30))")
            let (greeting, ms) = try #require(Self.greet(lab), "\(label): no greeting; log: \(containerd.log(tail: 30))")
            #expect(greeting == Greeter.line)
            return ms
        }
        let proxied = "connection to port \(Greeter.port) proxied"

        // Not annotated: learned from the first restore.
        try run("sfl", annotations: [])
        let learnedStart = try cycle("learning, restore 1")
        #expect(
            eventually(within: 20) { containerd.logLines(containing: "forwarded: silentClient").count == 1 },
            "restore 1 waits for the silent window; log: \(containerd.log(tail: 30))"
        )
        #expect(
            containerd.logLines(containing: proxied).last?.contains("first byte from the application") == true,
            "log: \(containerd.log(tail: 30))"
        )
        #expect(
            eventually(within: 20) {
                !containerd.logLines(containing: "port \(Greeter.port) learned as speaking first").isEmpty
            },
            "not learned; log: \(containerd.log(tail: 30))"
        )
        let learnedNext = try cycle("learning, restore 2")
        #expect(
            eventually(within: 20) { containerd.logLines(containing: "forwarded: speaksFirstPort").count == 1 },
            "restore 2 does not greet at once; log: \(containerd.log(tail: 30))"
        )
        rows.append(
            String(format: "not annotated: restore 1 greeting after %.0f ms (silent window), restore 2 %.0f ms", learnedStart, learnedNext)
        )
        removeTask(containerd, "sfl")

        // Annotated: greets at once from the first restore on.
        try run("sfa", annotations: ["zeropod-swift/speaks-first-ports=\(Greeter.port)"])
        let annotated = try cycle("annotated, restore 1")
        #expect(
            eventually(within: 20) { containerd.logLines(containing: "forwarded: speaksFirstPort").count == 2 },
            "the annotated port waits for the silent window; log: \(containerd.log(tail: 30))"
        )
        #expect(
            containerd.logLines(containing: "forwarded: silentClient").count == 1,
            "log: \(containerd.log(tail: 30))"
        )
        rows.append(String(format: "annotated: restore 1 greeting after %.0f ms", annotated))
        removeTask(containerd, "sfa")

        let times = Self.firstByteTimes(containerd.logLines(containing: proxied))
        print(
            "[zpsf] \(flavor.name): \(rows.joined(separator: "; ")); activator's first byte back after "
                + "\(times.joined(separator: " / ")) ms (client connect + ip netns + restore included above)"
        )
    }

    /// A node that knows probes only by their content (no probe sources, learn-probe-sources off)
    /// refuses the annotation at Create, naming it: a probe would otherwise restore the container.
    @Test(arguments: ContainerdFlavor.all)
    func annotation_refusedWhereProbesAreKnownOnlyByContent(flavor: ContainerdFlavor) throws {
        let directory = try TemporaryDirectory("zpsf-refused")
        let nodeConfig = try directory.write("node.conf", "learn-probe-sources = false\n")
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "sfr",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let pod = try TestNetns("zpsf-refused")
        defer { pod.delete() }
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2",
            "--annotation", "zeropod.ctrox.dev/scaledown-duration=2s",
            "--annotation", "zeropod-swift/speaks-first-ports=\(Greeter.port)",
            "--with-ns", "network:\(pod.path)", "--rootfs", try TestPaths.busyboxRootfs(), "sfr",
        ] + Greeter.command())
        defer { removeTask(containerd, "sfr") }
        #expect(created.status != 0, "created: \(created.stdout)")
        #expect(
            created.stderr.contains("zeropod-swift/speaks-first-ports") && created.stderr.contains("not supported yet"),
            "stderr: \(created.stderr)"
        )
    }
}
