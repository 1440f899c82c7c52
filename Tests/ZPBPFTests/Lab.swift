import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Network namespaces and veth pairs for one test, deleted with it. Names carry the pid and a
/// per-test index so parallel tests never collide: `zpbpf-<pid>-<index>-<role>`.
/// Subnets: IPv4 10.77.<index*4+link>.0/24 and IPv6 fd77:<index*4+link>::/64.
final class Lab {
    let index: Int
    private var namespaces: [String: TestNetns] = [:]

    init(index: Int) { self.index = index }

    /// Creates a namespace with `lo` up; returns its name. Its path is /var/run/netns/<name>.
    func namespace(_ role: String) throws -> String {
        let netns = try TestNetns(exactName: "zpbpf-\(getpid())-\(index)-\(role)")
        namespaces[netns.name] = netns
        return netns.name
    }

    /// Joins `pod` and `client` with a veth pair number `link` (0-3). The pod side gets .1 and
    /// fd77:N::1, the client side .2/.3 and fd77:N::2/::3. Returns the addresses.
    @discardableResult
    func veth(pod: String, client: String, link: Int = 0) throws -> Addresses {
        let a = Addresses(subnet: index * 4 + link)
        guard let podNetns = namespaces[pod], let clientNetns = namespaces[client] else {
            throw LabError("veth: \(pod) or \(client) is not a namespace of this lab")
        }
        try connectVeth(
            podNetns,
            "zpp\(link)",
            addresses: ["\(a.pod4)/24", "\(a.pod6)/64"],
            to: clientNetns,
            "zpc\(link)",
            addresses: ["\(a.client4)/24", "\(a.other4)/24", "\(a.client6)/64", "\(a.other6)/64"]
        )
        return a
    }

    static func path(_ namespace: String) -> FilePath { FilePath("/var/run/netns/\(namespace)") }
}

struct Addresses {
    var subnet: Int
    var pod4: String { "10.77.\(subnet).1" }
    var client4: String { "10.77.\(subnet).2" }
    var other4: String { "10.77.\(subnet).3" }
    var pod6: String { "fd77:\(subnet)::1" }
    var client6: String { "fd77:\(subnet)::2" }
    var other6: String { "fd77:\(subnet)::3" }
}

extension TestSocket {
    /// A TCP listener in `namespace` on `port` (dual-stack), made as the activator makes it.
    static func listener(in namespace: String, port: UInt16 = 0) throws -> TestSocket {
        TestSocket(try PodRedirector.makeListener(inNamespaceAt: Lab.path(namespace), port: port))
    }

    /// Connects from namespace `namespace` (a name) to `address`:`port`, optionally from `source`.
    static func connect(
        from namespace: String,
        to address: String,
        port: UInt16,
        source: String? = nil
    ) throws -> TestSocket {
        try connect(fromNetns: Lab.path(namespace).string, to: address, port: port, source: source)
    }
}
