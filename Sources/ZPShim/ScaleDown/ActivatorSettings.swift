import ZPActivator
import ZPCore

extension ActivatorConfiguration {
    /// The activator's settings from a container's annotations: `disable-probe-detection`,
    /// `probe-buffer-size`, `connect-timeout`, and `proxy-timeout` as the idle limit of the
    /// connections it proxies after a restore (none when absent; docs/configuration.md), and
    /// `zeropod-swift/speaks-first-ports`. Ports are learned as speaking first only where probes are
    /// `recognisedWithoutContent` (the node's probe sources or kubelet's connections; decision
    /// 0055): a port that speaks first is forwarded without a look at its content.
    init(container config: ContainerConfig, probesRecognisedWithoutContent: Bool) {
        self.init(
            probeDetection: !config.disableProbeDetection,
            probeBufferSize: config.probeBufferSize,
            connectTimeout: config.connectTimeout,
            proxyIdleTimeout: config.proxyTimeout,
            speaksFirstPorts: config.speaksFirstPorts,
            learnsSpeaksFirstPorts: probesRecognisedWithoutContent
        )
    }
}
