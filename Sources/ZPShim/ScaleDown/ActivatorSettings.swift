import ZPActivator
import ZPCore

extension ActivatorConfiguration {
    /// The activator's settings from a container's annotations: `disable-probe-detection`,
    /// `probe-buffer-size`, `connect-timeout`, and `proxy-timeout` as the idle limit of the
    /// connections it proxies after a restore (none when absent; docs/configuration.md).
    init(container config: ContainerConfig) {
        self.init(
            probeDetection: !config.disableProbeDetection,
            probeBufferSize: config.probeBufferSize,
            connectTimeout: config.connectTimeout,
            proxyIdleTimeout: config.proxyTimeout
        )
    }
}
