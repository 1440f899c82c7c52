import Foundation
import Testing
import ZPAPI
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// End to end through a real containerd (1.6 and 2.x): `ctr` drives our shim, which drives runc.
@Suite(.serialized) struct ContainerdEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func container_runsServesExecsAndCleansUp(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "run")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-run")
        defer { netns.delete() }
        let id = "web1"
        let stdoutFile = containerd.directory + "/web1.out"

        // Create + start, stdout/stderr to a file:// log URI.
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--with-ns", "network:\(netns.path)",
            "--log-uri", "file://\(stdoutFile)", "--rootfs", rootfs, id,
            "/bin/sh", "-c", "echo zpshim-stdout-$((40+2)); echo zpshim-stderr >&2; exec httpd -f -p 8080 -h /www",
        ])
        #expect(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        try #require(created.status == 0)

        // A real TCP client gets the page.
        var body: String?
        _ = eventually {
            body = netns.httpGet(port: 8080)
            return body != nil
        }
        #expect(body == "zeropod busybox\n")

        // `ctr task ls` shows RUNNING with a live pid.
        let list = try containerd.ctr(["task", "ls"])
        let row = list.stdout.split(separator: "\n").first { $0.hasPrefix(id + " ") }.map {
            $0.split(separator: " ", omittingEmptySubsequences: true)
        }
        let pid = row.flatMap { Int32($0[1]) } ?? 0
        #expect(row?.last == "RUNNING", "task ls: \(list.stdout)")
        #expect(isAlive(pid))

        // The task's stdout and stderr reach the log file containerd named.
        #expect(
            eventually {
                ((try? String(contentsOfFile: stdoutFile, encoding: .utf8)) ?? "").contains("zpshim-stdout-42")
            }
        )
        #expect(((try? String(contentsOfFile: stdoutFile, encoding: .utf8)) ?? "").contains("zpshim-stderr"))

        // Exec: output and exit code come back through ctr.
        let exec = try containerd.ctr([
            "task", "exec", "--exec-id", "e1", id, "/bin/sh", "-c", "echo exec-output-$((6*7)); exit 5",
        ])
        #expect(exec.stdout.contains("exec-output-42"), "exec: \(exec.stdout) \(exec.stderr)")
        #expect(exec.status == 5)

        // Pids lists the init process.
        let ps = try containerd.ctr(["task", "ps", id])
        #expect(ps.stdout.contains("\(pid)"))

        // Shim memory, side by side with Debian's/containerd's Go runc shim running the same container.
        let socket = containerd.shimSocket(group: id)
        let shimPid = processes(matching: ["containerd-shim-zeropod-v2", "-socket", socket]).first
        #expect(shimPid != nil, "no shim process for \(socket)")
        // Decision 0076: the shim holds a dummy perf event (opened beside its start) for its life.
        if let shimPid {
            #expect(eventually { holdsPerfEvent(shimPid) }, "shim \(shimPid) holds no perf event")
        }
        let goRun = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.runc.v2", "--with-ns", "network:\(netns.path)", "--rootfs", rootfs,
            "web-go",
            "/bin/httpd", "-f", "-p", "8081", "-h", "/www",
        ])
        #expect(goRun.status == 0, "ctr run (runc.v2): \(goRun.stderr)")
        _ = eventually { netns.httpGet(port: 8081) != nil }
        let goShimPid = processes(matching: ["containerd-shim-runc-v2", "-id", "web-go"]).first
        print(
            "[zpshim] \(flavor.name): shim memory per container, KiB rss/pss/anon: zeropod-swift \(memoryKiB(shimPid)), containerd-shim-runc-v2 \(memoryKiB(goShimPid))"
        )
        _ = try containerd.ctr(["task", "kill", "-s", "SIGKILL", "web-go"])
        _ = eventually { (try? containerd.ctr(["task", "ls"]).stdout.contains("STOPPED")) ?? false }
        _ = try containerd.ctr(["task", "rm", "web-go"])
        _ = try containerd.ctr(["c", "rm", "web-go"])

        // Kill (httpd as pid 1 ignores SIGTERM, so SIGKILL), then remove: nothing left behind.
        #expect(try containerd.ctr(["task", "kill", "-s", "SIGKILL", id]).status == 0)
        #expect(
            eventually {
                let rows = (try? containerd.ctr(["task", "ls"]).stdout) ?? ""
                return rows.split(separator: "\n").contains { $0.hasPrefix(id + " ") && $0.hasSuffix("STOPPED") }
            }
        )
        let rm = try containerd.ctr(["task", "rm", id])
        #expect(rm.status == 0, "task rm: \(rm.stderr)")
        #expect(try containerd.ctr(["c", "rm", id]).status == 0)
        #expect(eventually { !isAlive(pid) }, "container init \(pid) still exists")
        #expect(eventually { !FileManager.default.fileExists(atPath: socket) }, "shim socket \(socket) left behind")
        if let shimPid { #expect(eventually { !isAlive(shimPid) }, "shim \(shimPid) still running") }
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        #expect(!mounts.contains(containerd.directory), "mounts left: \(mounts)")
        #expect(!FileManager.default.fileExists(atPath: "/run/containerd/runc/\(containerd.namespace)/\(id)"))
    }

    @Test(arguments: ContainerdFlavor.all)
    func attachedRun_stdinAndItsEndReachTheTask_stdoutAndExitCodeComeBack(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "io")
        defer { containerd.stop() }
        // Foreground `ctr run --rm`: ctr copies its stdin into the task's stdin FIFO and closes it at end
        // of input (the task must see end of file), prints the task's stdout FIFO, waits for the exit
        // and deletes the task.
        let input = containerd.directory + "/input.txt"
        try Data("line-one\nline-two\n".utf8).write(to: URL(fileURLWithPath: input))
        let script =
            "\(containerd.flavor.binDirectory)/ctr -a \(containerd.socket) -n \(containerd.namespace) run --rm --runtime io.containerd.zeropod.v2 --rootfs \(rootfs) io1 /bin/sh -c 'wc -l; exit 7' < \(input)"
        let r = try run(["/bin/sh", "-c", script], timeout: 60)
        #expect(
            r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2",
            "stdout: \(r.stdout) stderr: \(r.stderr)"
        )
        #expect(r.status == 7)
        #expect(try containerd.ctr(["c", "ls", "-q"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        #expect(eventually { !FileManager.default.fileExists(atPath: containerd.shimSocket(group: "io1")) })
    }

    @Test(arguments: ContainerdFlavor.all)
    func lostShim_isCleanedUpByTheDeleteCommand(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(flavor: flavor, tag: "lost")
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-lost")
        defer { netns.delete() }
        let id = "lost1"
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--with-ns", "network:\(netns.path)",
            "--rootfs", rootfs, id, "/bin/httpd", "-f", "-p", "8080", "-h", "/www",
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)")
        #expect(eventually { netns.httpGet(port: 8080) != nil })
        let list = try containerd.ctr(["task", "ls"]).stdout
        let pid =
            list.split(separator: "\n").first { $0.hasPrefix(id + " ") }.flatMap { Int32($0.split(separator: " ")[1]) }
            ?? 0
        let socket = containerd.shimSocket(group: id)
        let shimPid = try #require(processes(matching: ["containerd-shim-zeropod-v2", "-socket", socket]).first)
        let eventsFile = containerd.directory + "/events.txt"
        let eventsWatcher = try containerd.startEvents(into: eventsFile)
        defer {
            let p = eventsWatcher.processIdentifier
            kill(p, SIGTERM)
            _ = eventually(within: 10) { !isAlive(p) }
        }
        #expect(eventually { FileManager.default.fileExists(atPath: eventsFile) })

        let statusSocket = NodeLayout().statusSocket(forShimSocket: socket)
        #expect(eventually { FileManager.default.fileExists(atPath: statusSocket) }, "no status socket \(statusSocket)")

        // containerd loses the shim: it runs `containerd-shim-zeropod-v2 ... delete`, which removes the container.
        kill(shimPid, SIGKILL)
        #expect(eventually { !isAlive(pid) }, "container init \(pid) survived the shim's delete")
        #expect(
            eventually {
                let rows = (try? containerd.ctr(["task", "ls"]).stdout) ?? ""
                return !rows.split(separator: "\n").contains { $0.hasPrefix(id + " ") && $0.hasSuffix("RUNNING") }
            }
        )
        _ = try containerd.ctr(["task", "rm", id])
        #expect(try containerd.ctr(["c", "rm", id]).status == 0)
        #expect(
            eventually { !FileManager.default.fileExists(atPath: socket) },
            "dead shim socket \(socket) left behind"
        )
        #expect(
            eventually { !FileManager.default.fileExists(atPath: statusSocket) },
            "dead shim status socket \(statusSocket) left behind"
        )
        // containerd publishes the DeleteResponse of our `delete` command as the task's exit.
        #expect(
            eventually { ((try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? "").contains("/tasks/exit") }
        )
        let events = try String(contentsOfFile: eventsFile, encoding: .utf8)
        let exitLine = events.split(separator: "\n").first { $0.contains("/tasks/exit") && $0.contains("\"\(id)\"") }
        #expect(exitLine?.contains("\"exit_status\":137") == true, "events: \(events)")
        #expect(exitLine?.contains("\"pid\":\(pid)") == true, "events: \(events)")
    }
}
