import ArgumentParser

/// `zeropod`: the node's command-line tool for zeropod-swift. The executable's `main` only calls
/// ``ZeropodCommand/main()``; every subcommand lives in this library so tests can run it.
///
/// Subcommands: ``StatusCommand`` (`zeropod status`) and ``DoctorCommand`` (`zeropod doctor`: what
/// the node has and lacks). To add one, write an `AsyncParsableCommand` in a file of its own here,
/// take ``NodeOptions`` with `@OptionGroup` if it needs the node settings, and list it in
/// ``configuration``'s `subcommands`.
public struct ZeropodCommand: AsyncParsableCommand {
    /// The command's name, help and subcommands.
    public static let configuration = CommandConfiguration(
        commandName: "zeropod",
        abstract: "Look at zeropod-swift on this node.",
        discussion: "The containerd shim itself is containerd-shim-zeropod-v2; this tool talks to the shims it starts.",
        subcommands: [
            StatusCommand.self,
            DoctorCommand.self,
        ]
    )

    /// No options of its own.
    public init() {}
}
