// zeropod-installer: parses and runs; everything else is in ZPInstaller (InstallerCommand).
#if canImport(Glibc)
import Glibc
#endif
import ZPInstaller

exit(await InstallerCommand.run(arguments: Array(CommandLine.arguments.dropFirst()), executable: CommandLine.arguments[0]))
