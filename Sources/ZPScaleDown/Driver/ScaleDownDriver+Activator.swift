import Logging
import ZPCore

extension ScaleDownDriver {
    /// Waits for the running process, finds its ports (unless configured), sets up the activator
    /// and serves until cancelled. Without a redirect, or when the activator cannot be set up,
    /// scale-down is off for good (`redirectUnavailable`).
    func serveActivator() async {
        guard let redirect else {
            await feed(.redirectUnavailable(reason: "the pod's redirector could not be set up"))
            return
        }
        var ports = settings.ports
        var pause = settings.portDiscoveryPause
        while ports.isEmpty && !Task.isCancelled {
            if let pid = state.withLock({ $0.lifecycle.phase == .running ? $0.lifecycle.pid : nil }) {
                ports = control.listeningPorts(ofTreeAt: pid)
                if !ports.isEmpty { break }
            }
            do {
                try await clock.sleep(until: clock.now().advanced(by: pause))
            } catch {
                return
            }
            pause = min(pause * 2, settings.portDiscoveryMaxPause)
        }
        guard !Task.isCancelled else { return }
        if let conflict = portsOfOthers(ports) {
            logger.error("scale-down is off: \(conflict)")
            await feed(.redirectUnavailable(reason: conflict))
            return
        }
        let activator: any ScaleDownActivator
        do {
            activator = try await redirect.makeActivator(ports: ports) { [weak self] in
                guard let self else { throw ScaleDownError("container deleted") }
                try await self.connectionNeedsApplication()
            }
        } catch {
            logger.warning("scale-down is off: \(error)")
            await feed(.redirectUnavailable(reason: "\(error)"))
            return
        }
        state.withLock {
            $0.activator = activator
            $0.ports = ports
        }
        var metadata: Logger.Metadata = ["ports": "\(ports)", "netns": "\(redirect.location)"]
        // A dry run arms the activator too (its listeners and the ports' activity tracking), but
        // the lifecycle never orders the redirect on.
        if settings.lifecycle.dryRun { metadata["dryRun"] = "true" }
        logger.info("scale-down armed", metadata: metadata)
        // The scale-down window starts no earlier than now: activity before the ports were found
        // went unseen (a slow start such as a JVM's is found seconds after it serves), and an idle
        // deadline that passed meanwhile would checkpoint at once, with no time for a pre-dump.
        // Not for a process known to be idle already (restored from a migration's checkpoint).
        if !state.withLock({ $0.startedIdle }) { await feed(.activitySeen(at: clock.now())) }
        await fireEarlyTimers()
        do {
            try await activator.run()
        } catch {
            if !Task.isCancelled { logger.warning("activator stopped: \(error)") }
        }
    }

    /// Why configured `ports` must not be redirected: a process of the pod outside this
    /// container's tree listens on one of them (a `ports-map` naming another container's port
    /// would steer that container's connections to this one's activator). Nil when none does, and
    /// for discovered ports (they are this tree's by construction).
    func portsOfOthers(_ ports: [UInt16]) -> String? {
        guard !settings.ports.isEmpty, let pid = state.withLock({ $0.lifecycle.pid }) else { return nil }
        let others = control.portsServedByOthers(ports, treeAt: pid)
        guard !others.isEmpty else { return nil }
        return
            "zeropod.ctrox.dev/ports-map names port(s) \(others) that another process of the pod, not this container's, listens on"
    }
}
