import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Pinning, reopening and cleanup, checked with bpftool.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct LifecycleTests {
    private func pinRoot(_ name: String) -> FilePath { FilePath("/sys/fs/bpf/zpbpf-test-\(getpid())-\(name)") }

    @Test func unpinnedOwner_goesAway_leavesNoLinkOrMap() throws {
        let lab = Lab(index: 10)
        let pod = try lab.namespace("pod")
        var redirector: PodRedirector? = try PodRedirector(netnsPath: Lab.path(pod))
        let ids = try redirector!.kernelObjectIDs()
        #expect(ids.maps.count == 10)
        let names = try redirector!.linkNames()
        #expect(ids.links.count == 2, "sk_lookup and the tcx link on lo: \(names)")
        #expect(try Set(ids.links).isSubset(of: bpftoolIDs("link")))
        #expect(try Set(ids.maps).isSubset(of: bpftoolIDs("map")))
        redirector = nil
        #expect(try eventually { try bpftoolIDs("link").isDisjoint(with: ids.links) }, "links detached")
        #expect(try eventually { try bpftoolIDs("map").isDisjoint(with: ids.maps) }, "maps freed")
        #expect(throws: BPFError.closed) {
            let closed = try PodRedirector(netnsPath: Lab.path(pod))
            closed.close()
            try closed.setRedirect(port: 1, enabled: true)
        }
    }

    @Test func pinned_survivesOwner_reopens_andRemoveCleansUp() throws {
        let lab = Lab(index: 11)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let root = pinRoot("reopen")
        defer {
            PodRedirector.removePinned(at: root.appending("pod-a"))
            _ = rmdir(root.string)
        }
        let port: UInt16 = 8080
        let activator = try TestSocket.listener(in: pod)
        let app = try TestSocket.listener(in: pod, port: port)

        var first: PodRedirector? = try PodRedirector(netnsPath: Lab.path(pod))
        let ids = try first!.kernelObjectIDs()
        #expect(ids.links.count == 3, "sk_lookup, the tcx links on lo and the veth")
        let dir = try first!.pin(podID: "pod-a", root: root)
        #expect(dir == root.appending("pod-a"))
        #expect(throws: BPFError.self) { try first!.pin(podID: "../x", root: root) }

        // Owner-only permissions.
        var st = stat()
        #expect(stat(dir.string, &st) == 0 && st.st_mode & 0o777 == 0o700)
        #expect(stat(root.string, &st) == 0 && st.st_mode & 0o777 == 0o700)
        let pins = try FileManager.default.contentsOfDirectory(atPath: dir.string).sorted()
        #expect(pins.count == 14, "10 maps, 3 links and the reuseport program: \(pins)")
        for name in pins {
            #expect(stat(dir.appending(name).string, &st) == 0 && st.st_mode & 0o777 == 0o600, "\(name)")
        }
        try first!.trackPort(port)
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try first!.registerListener(port: port, socket: socket)
        }
        first = nil  // the "shim" goes away; pins keep everything attached

        #expect(try bpftoolIDs("link").isSuperset(of: ids.links))
        let c1 = try TestSocket.connect(from: client, to: a.pod4, port: port)
        _ = try #require(app.accept(), "redirect is still off")
        _ = c1

        // A restarted shim reopens the pins and switches the redirect on.
        let second = try PodRedirector.open(pinnedAt: dir)
        #expect(try second.kernelObjectIDs().links.sorted() == ids.links.sorted())
        #expect(try second.hasListener(port: port))
        #expect(try second.trackedPorts() == [port])
        #expect(try second.redirectedPorts() == [])
        try second.setRedirect(port: port, enabled: true)
        try second.setRedirect(port: 443, enabled: true)
        #expect(try second.redirectedPorts() == [443, port])
        let c2 = try TestSocket.connect(from: client, to: a.pod6, port: port)
        let held = try #require(activator.accept(), "reopened maps drive the attached programs")
        #expect(try c2.roundTrip(to: held))
        #expect(try second.activity(port: port)?.lastActivity != nil)

        second.remove()
        #expect(access(dir.string, F_OK) != 0, "pin directory removed")
        #expect(try eventually { try bpftoolIDs("link").isDisjoint(with: ids.links) }, "links detached")
        #expect(try eventually { try bpftoolIDs("map").isDisjoint(with: ids.maps) }, "maps freed")
        // With the links gone, new connections reach the app again.
        let c3 = try TestSocket.connect(from: client, to: a.pod4, port: port)
        _ = try #require(app.accept())
        _ = c3
    }

    @Test func closedSocket_dropsItsListenerEntry() throws {
        let lab = Lab(index: 12)
        let pod = try lab.namespace("pod")
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        var activator: TestSocket? = try TestSocket.listener(in: pod)
        try activator!.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: 7000, socket: socket)
        }
        #expect(try redirector.hasListener(port: 7000))
        activator = nil
        #expect(try eventually { try !redirector.hasListener(port: 7000) })
    }

    @Test func preloadedPrograms_areTheOnesAttached_andUnusedOnesAreFreed() throws {
        let lab = Lab(index: 17)  // unique per test: suites run in parallel and the index names the netns
        let pod = try lab.namespace("pod")
        var programs: PodRedirector.Programs? = try PodRedirector.Programs.load()
        let loaded = Set(try programs!.mapIDs())
        let mapsNow = try bpftoolIDs("map")
        #expect(loaded.count == 10 && loaded.isSubset(of: mapsNow), "a preload creates the pod's ten maps")
        let redirector = try PodRedirector(netnsPath: Lab.path(pod), programs: programs)
        programs = nil
        let ids = try redirector.kernelObjectIDs()
        #expect(Set(ids.maps) == loaded, "the redirector uses the preloaded maps instead of loading new ones")
        #expect(ids.links.count == 2, "sk_lookup and the tcx link on lo")
        try redirector.trackPort(8080)
        redirector.close()
        #expect(try eventually { try bpftoolIDs("map").isDisjoint(with: loaded) }, "maps freed with the redirector")

        var unused: PodRedirector.Programs? = try PodRedirector.Programs.load()
        let spare = Set(try unused!.mapIDs())
        let mapsThen = try bpftoolIDs("map")
        #expect(spare.count == 10 && spare.isSubset(of: mapsThen))
        unused = nil
        #expect(try eventually { try bpftoolIDs("map").isDisjoint(with: spare) }, "an unused preload frees its maps")
    }

    @Test func invalidPodIDs_areRejected() throws {
        for bad in ["", ".", "..", "a/b", String(repeating: "x", count: 201)] {
            #expect(throws: BPFError.self) { try PodRedirector.validate(podID: bad) }
        }
        try PodRedirector.validate(podID: "default_web-0.abc")
    }
}

/// Feature probes: what this kernel supports, and how a missing feature is reported.
@Suite(.enabled(if: Privileges.isRoot, "needs root: feature probes load BPF programs"))
struct FeatureProbeTests {
    @Test func thisKernel_hasEveryFeature() {
        #expect(FeatureProbe.skLookup)
        #expect(FeatureProbe.skAssign)
        #expect(FeatureProbe.sockops)
        #expect(FeatureProbe.sockopsNetnsCookie)
        #expect(FeatureProbe.missingForLoad() == nil)
    }

    @Test func notSupported_namesFeatureAndKernel() {
        let error = BPFError.notSupported(feature: "sk_lookup", minimumKernel: "5.9")
        #expect(error.description == "sk_lookup is not supported by this kernel (needs Linux 5.9 or later)")
    }

    @Test func missingNamespace_isNamedInTheError() {
        #expect(
            throws: BPFError.system(
                SystemError(call: "open", subject: "/var/run/netns/zpbpf-absent", errno: .noSuchFileOrDirectory)
            )
        ) {
            _ = try PodRedirector(netnsPath: "/var/run/netns/zpbpf-absent")
        }
    }
}

extension FeatureProbeTests {
    @Test func doctorProbe_reportsEverythingPresent() {
        let features = BPFFeatures.probe()
        #expect(features.count == 7)
        for feature in features { #expect(feature.supported, "\(feature)") }
        #expect(!BPFFeatures.probe(bpffs: "/tmp").last(where: { $0.name.hasPrefix("bpffs") })!.supported)
    }
}
