import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The shim executable's entry point: parse containerd's command line, run the command.
public enum ShimMain {
    /// Descriptors the shim's table holds from its start (decision 0071): the CRIU workers'
    /// inherited descriptors are duplicated above 100 before their spawn, and a pod's BPF maps,
    /// programs and links, its activator sockets and containerd's connections come on top.
    static let descriptorTableSize: CInt = 256

    /// What the process needs before it has a second thread; the executable calls it first, before
    /// `run` (whose async code runs on the concurrency runtime's threads). Reserves the descriptor
    /// table: with one thread the kernel grows it at once, with more only after an RCU grace
    /// period (10-20 ms on these nodes), which would otherwise fall into the first CRIU worker's
    /// spawn (decision 0071). A failure is ignored: the spawn still works, it only waits then.
    public static func prepareProcess() {
        try? DescriptorTable.reserve(descriptorTableSize)
    }

    /// Runs the command named by `arguments` (without `argv[0]`). - Returns: The process exit code.
    public static func run(arguments: [String]) async -> Int32 {
        let options: ShimCommandLine
        do {
            options = try ShimCommandLine(arguments: arguments)
        } catch {
            printError("containerd-shim-zeropod-v2: \(error)")
            return 2
        }
        switch options.action {
        case .version:
            try? StandardStream.output.write(
                Array("containerd-shim-zeropod-v2:\n  Version:  \(TaskService.version)\n  Runtime:  Swift\n".utf8)
            )
        case .info:
            // Without this case `-info` would start a daemon that never exits, and containerd 2.x
            // waits for it before its CRI plugin comes up.
            printError(
                "containerd-shim-zeropod-v2 -info: runtime introspection (RuntimeInfo with runc's features) is not supported yet"
            )
            return 1
        case .start:
            do {
                // containerd 1.6 accepts only the bare address; 2.x accepts it too (bootstrap version 2).
                try StandardStream.output.write(Array(try StartCommand.run(options).utf8))
            } catch {
                printError("containerd-shim-zeropod-v2 start: \(error)")
                return 1
            }
        case .delete:
            try? StandardStream.output.write(await DeleteCommand.run(options))
        case .serve:
            do {
                try await ShimDaemon.run(options)
            } catch {
                printError("containerd-shim-zeropod-v2: \(error)")
                return 1
            }
        }
        return 0
    }

    private static func printError(_ message: String) {
        try? StandardStream.error.write(Array((message + "\n").utf8))
    }
}
