#if canImport(Glibc)
import Glibc
#endif
import NIOPosix
import ZPSystem
import ZPTTRPC

/// `containerd-shim-zeropod-v2 status [-socket PATH] [-id ID] [-watch] [-metrics]`: reads the status
/// service of one shim (`-socket`) or of every shim on the node (each socket in
/// ``ShimStatusService/socketDirectory``).
///
/// Without flags it prints one line per container; `-id` prints that container only; `-metrics`
/// prints the metrics in the Prometheus text format; `-watch` prints the current status and then one
/// line per change until the shim ends the stream (one shim only).
public enum StatusCommand {
    /// Runs the command. - Returns: The process exit code (0 on success, 1 on errors, 2 on usage).
    public static func run(_ options: ShimCommandLine) async -> Int32 {
        let sockets = options.socket.isEmpty ? statusSockets(in: ShimStatusService.socketDirectory) : [options.socket]
        if sockets.isEmpty {
            printError("status: no shim status socket in \(ShimStatusService.socketDirectory)")
            return 1
        }
        if options.watch && sockets.count != 1 {
            printError("status -watch: \(sockets.count) shims run here; name one with -socket PATH")
            return 2
        }
        var failed = false
        for socket in sockets {
            do {
                let client = try await ShimStatusClient.connect(socketPath: socket, group: MultiThreadedEventLoopGroup.singleton)
                if sockets.count > 1 { print("# \(socket)") }
                do {
                    try await show(client, options)
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
            } catch {
                printError("status \(socket): \(error)")
                failed = true
            }
        }
        return failed ? 1 : 0
    }

    private static func show(_ client: ShimStatusClient, _ options: ShimCommandLine) async throws {
        if options.metrics {
            print(StatusText.prometheus(try await client.metrics()), terminator: "")
        } else if options.watch {
            for try await change in client.subscribe(initialSnapshot: true)
            where options.id.isEmpty || change.status.id == options.id {
                print(StatusText.line(change, now: SystemClock.realtimeNanoseconds()))
            }
        } else if !options.id.isEmpty {
            print(StatusText.line(try await client.status(id: options.id), now: SystemClock.realtimeNanoseconds()))
        } else {
            for status in try await client.list() { print(StatusText.line(status, now: SystemClock.realtimeNanoseconds())) }
        }
    }

    /// The `*.sock` files in `directory`, sorted; empty when it cannot be read.
    static func statusSockets(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasSuffix(".sock") { names.append(directory + "/" + name) }
        }
        return names.sorted()
    }

    private static func print(_ text: String, terminator: String = "\n") {
        try? StandardStream.output.write(Array((text + terminator).utf8))
    }

    private static func printError(_ message: String) {
        try? StandardStream.error.write(Array((message + "\n").utf8))
    }
}
