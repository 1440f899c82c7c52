// containerd-shim-zeropod-v2: everything lives in ZPShim (ShimMain) so tests can reach it.
import ZPShim

#if canImport(Glibc)
import Glibc
#endif

// Before the first `await`: this is the process's only thread until the async code hops to the
// concurrency runtime's pool (decision 0071).
ShimMain.prepareProcess()
exit(await ShimMain.run(arguments: Array(CommandLine.arguments.dropFirst())))
