import ArgumentParser
import NIOPosix
import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `zeropod status [--run-dir DIR | --node-config PATH | --socket PATH] [--id ID] [--watch | --metrics]`:
/// reads the status service (`zeropod.shim.v1.Shim`, decision 0008) of one shim (`--socket`) or of
/// every shim on the node (each `*.sock` in `<run-dir>/s`).
///
/// Without flags it prints one line per container (``StatusText/line(_:now:)``); `--id` that
/// container only; `--metrics` the metrics in the Prometheus text format under the original
/// zeropod's names; `--watch` the current status and then one line per change until the shim ends
/// the stream (one shim only). Exit status: 0, 1 when a shim could not be read or does not serve
/// `--id`, 2 for `--watch` with several shims.
public struct StatusCommand: AsyncParsableCommand {
    /// The command's name and help.
    public static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the containers of the node's zeropod-swift shims.",
        discussion: """
            Reads each shim's status socket (<run-dir>/s/<hash>.sock, owner-only: run as the shims' user, \
            normally root). One line per container: id, pod, container, phase (the original zeropod's), \
            lifecycle phase, since when, pid, last checkpoint and restore, error counts.
            """
    )

    /// `--node-config`, `--run-dir`: where the status sockets are.
    @OptionGroup public var node: NodeOptions

    /// `--socket PATH`: read this one status socket instead of every shim's.
    @Option(help: ArgumentHelp("Read only this shim's status socket.", valueName: "path"))
    public var socket: String?

    /// `--id ID`: only this container.
    @Option(
        help: ArgumentHelp(
            "Show only this container (its status, its changes or its metrics).",
            valueName: "container-id"
        )
    )
    public var id: String?

    /// `--watch`: follow the changes.
    @Flag(help: "Print the current status, then one line per change until the shim ends the stream (one shim only).")
    public var watch = false

    /// `--metrics`: Prometheus text instead of status lines.
    @Flag(help: "Print the metrics in the Prometheus text format (the original zeropod's metric names).")
    public var metrics = false

    /// No options given.
    public init() {}

    /// Refuses combinations that could not all take effect.
    /// - Throws: `ValidationError` naming the options.
    public func validate() throws {
        if watch && metrics { throw ValidationError("--watch and --metrics cannot be combined") }
        if socket != nil && (node.runDirectory != nil || node.nodeConfigPath != nil) {
            throw ValidationError(
                "--socket names the status socket itself: it cannot be combined with --run-dir or --node-config"
            )
        }
        if id?.isEmpty == true { throw ValidationError("--id: the container id is empty") }
    }

    /// Runs the command on stdout and stderr.
    /// - Throws: `ExitCode` when the status is not 0.
    public func run() async throws {
        let status = await execute(
            output: .standard,
            environment: ProcessInfo.processInfo.environment,
            now: { SystemClock.realtimeNanoseconds() }
        )
        if status != 0 { throw ExitCode(status) }
    }

    /// The command's work, apart from the process, so tests can run it.
    ///
    /// - Parameters:
    ///   - output: Where lines go.
    ///   - environment: The environment (for `ZEROPOD_NODE_CONFIG`).
    ///   - now: The wall clock in nanoseconds since the Unix epoch, for "… ago".
    /// - Returns: The exit status: 0, 1 (a shim could not be read, or `--id` is not served), or 2
    ///   (`--watch` with several shims).
    public func execute(
        output: CommandOutput,
        environment: [String: String],
        now: @escaping @Sendable () -> Int64
    ) async -> Int32 {
        let sockets: [String]
        if let socket {
            sockets = [socket]
        } else {
            let layout: NodeLayout
            do {
                layout = try node.nodeConfig(environment: environment).layout
            } catch {
                output.problem("zeropod status: \(error)")
                return 1
            }
            sockets = Self.statusSockets(of: layout)
            if sockets.isEmpty {
                output.problem("zeropod status: no shim status socket in \(layout.statusSocketDirectory)")
                return 1
            }
        }
        if watch && sockets.count != 1 {
            output.problem("zeropod status --watch: \(sockets.count) shims run here; name one with --socket PATH")
            return 2
        }
        var failed = false
        for socket in sockets {
            do {
                let client = try await ShimStatusClient.connect(
                    socketPath: socket,
                    group: MultiThreadedEventLoopGroup.singleton
                )
                if sockets.count > 1 { output.line("# \(socket)") }
                do {
                    try await show(client, output: output, now: now)
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
            } catch {
                output.problem("zeropod status \(socket): \(error)")
                failed = true
            }
        }
        return failed ? 1 : 0
    }

    private func show(_ client: ShimStatusClient, output: CommandOutput, now: @Sendable () -> Int64) async throws {
        if metrics {
            output.text(StatusText.prometheus(try await client.metrics().filter { id == nil || $0.id == id }))
        } else if watch {
            for try await change in client.subscribe(initialSnapshot: true) where id == nil || change.status.id == id {
                output.line(StatusText.line(change, now: now()))
            }
        } else if let id {
            output.line(StatusText.line(try await client.status(id: id), now: now()))
        } else {
            for status in try await client.list() { output.line(StatusText.line(status, now: now())) }
        }
    }

    /// The status sockets of `layout`: the `*.sock` files in its status socket folder, sorted;
    /// empty when the folder cannot be read.
    public static func statusSockets(of layout: NodeLayout) -> [String] {
        let directory = layout.statusSocketDirectory
        let names = (try? Files.list(FilePath(directory))) ?? []
        return names.map { directory + "/" + $0 }.filter(layout.isStatusSocket)
    }
}
