// containerd-shim-zeropod-v2: everything lives in ZPShim (ShimMain) so tests can reach it.
import ZPShim

#if canImport(Glibc)
import Glibc
#endif

exit(await ShimMain.run(arguments: Array(CommandLine.arguments.dropFirst())))
