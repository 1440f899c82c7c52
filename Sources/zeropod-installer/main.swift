import ZPInstaller

// zeropod-installer: parses and runs; everything else is in ZPInstaller (InstallerCommand).
#if canImport(Glibc)
import Glibc
#endif

exit(
    await InstallerCommand.run(
        arguments: Array(CommandLine.arguments.dropFirst()),
        executable: CommandLine.arguments[0]
    )
)
