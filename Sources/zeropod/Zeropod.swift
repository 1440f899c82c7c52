// zeropod: the node's command-line tool. Everything lives in ZPCLI so tests can reach it.
import ZPCLI

@main
enum Zeropod {
    static func main() async {
        await ZeropodCommand.main()
    }
}
