import Testing
import ZPActivator
import ZPBPF
import ZPCore

@testable import ZPShim

/// What the shim hands the redirector and the activator from the node settings and the pod's
/// annotations: every parsed setting takes effect (issue 18; decisions 0040, 0041).
@Suite struct SettingsMappingTests {
    @Test func nodeSettings_reachTheRedirector() throws {
        let defaults = PodNetworks.options(NodeConfig())
        #expect(defaults.identifyKubelet && defaults.ignoreLoopback && defaults.probeSources.isEmpty)
        #expect(defaults.kubeletProcessNames == PodRedirector.kubeletProcessNames && defaults.kubeletNamespace == nil)
        let node = try NodeConfig(
            parsing: """
                learn-probe-sources = false
                loopback-is-activity = true
                probe-source-addresses = 10.0.0.5, fd00::5
                """
        )
        let options = PodNetworks.options(node)
        #expect(!options.identifyKubelet && !options.ignoreLoopback)
        #expect(options.probeSources == [IPAddress("10.0.0.5")!, IPAddress("fd00::5")!])
    }

    @Test func proxyTimeout_isTheActivatorsIdleLimit() throws {
        let absent = ActivatorConfiguration(
            container: try ContainerConfig(annotations: [:]),
            probesRecognisedWithoutContent: true
        )
        #expect(absent.proxyIdleTimeout == nil && absent.connectTimeout == .seconds(5) && absent.probeDetection)
        let set = ActivatorConfiguration(
            container: try ContainerConfig(annotations: [
                "zeropod.ctrox.dev/proxy-timeout": "1m30s", "zeropod.ctrox.dev/connect-timeout": "2s",
                "zeropod.ctrox.dev/disable-probe-detection": "true", "zeropod.ctrox.dev/probe-buffer-size": "4096",
            ]),
            probesRecognisedWithoutContent: true
        )
        #expect(set.proxyIdleTimeout == .seconds(90) && set.connectTimeout == .seconds(2))
        #expect(!set.probeDetection && set.probeBufferSize == 4096)
        let zero = ActivatorConfiguration(
            container: try ContainerConfig(annotations: ["zeropod.ctrox.dev/proxy-timeout": "0"]),
            probesRecognisedWithoutContent: true
        )
        #expect(zero.proxyIdleTimeout == nil)
    }

    @Test func speaksFirstPorts_reachTheActivator_learningOnlyWhereProbesAreKnownByConnection() throws {
        let config = try ContainerConfig(annotations: ["zeropod-swift/speaks-first-ports": "3306,25"])
        let known = ActivatorConfiguration(container: config, probesRecognisedWithoutContent: true)
        #expect(known.speaksFirstPorts == [25, 3306] && known.learnsSpeaksFirstPorts)
        let unknown = ActivatorConfiguration(
            container: try ContainerConfig(annotations: [:]),
            probesRecognisedWithoutContent: false
        )
        #expect(unknown.speaksFirstPorts.isEmpty && !unknown.learnsSpeaksFirstPorts)
    }
}
