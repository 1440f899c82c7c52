// The node manager (the `manager` container of the zeropod-node DaemonSet): parses its flags and
// runs ZPManager's service group (docs/configuration.md, "The manager").
import ZPManager

await ManagerCommand.runFromCommandLine()
