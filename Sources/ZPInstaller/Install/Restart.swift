// Restarting containerd so it reads the changed config: the decision is pure; carrying it out
// runs systemctl. No systemd (these test machines, some containers) → the exact command to run.

/// How the user asked the installer to restart containerd.
public enum RestartPolicy: String, Sendable, CaseIterable {
    /// Restart through systemd when it runs the node, else print what to run.
    case auto
    /// Never restart; print what to run.
    case never
}

/// What to do about restarting containerd.
public enum RestartAction: Sendable, Equatable {
    /// Nothing changed: no restart.
    case none
    /// Restart these systemd units if they are active (`systemctl try-restart`); k3s and rke2
    /// list a server and an agent unit, of which one runs.
    case systemd(units: [String])
    /// The installer cannot restart containerd: the text says exactly what to run.
    case manual(String)
}

/// Decides how containerd gets restarted (pure).
public enum RestartPlanner {
    /// The action for a flavour.
    /// - Parameters:
    ///   - flavour: which containerd.
    ///   - configChanged: whether any config file changed (no change → `.none`).
    ///   - policy: the user's choice.
    ///   - systemdRuns: whether systemd runs the node (`/run/systemd/system` exists).
    ///   - systemctl: whether a `systemctl` program is available to the installer.
    ///   - configPath: the file containerd must re-read, for the message.
    public static func decide(
        flavour: ContainerdFlavour,
        configChanged: Bool,
        policy: RestartPolicy,
        systemdRuns: Bool,
        systemctl: Bool,
        configPath: String
    ) -> RestartAction {
        guard configChanged else { return .none }
        switch policy {
        case .never:
            return .manual(instructions(flavour: flavour, configPath: configPath, why: "--restart never"))
        case .auto:
            if systemdRuns && systemctl { return .systemd(units: flavour.units) }
            let why = !systemdRuns ? "systemd does not run this node" : "systemctl is not available to the installer"
            return .manual(instructions(flavour: flavour, configPath: configPath, why: why))
        }
    }

    /// Exactly what to run, for a node where the installer cannot restart containerd itself.
    public static func instructions(flavour: ContainerdFlavour, configPath: String, why: String) -> String {
        let command: String
        switch flavour {
        case .containerd:
            command = "systemctl restart containerd"
        case .k3s:
            command = "systemctl restart k3s (on a server) or systemctl restart k3s-agent (on an agent)"
        case .rke2:
            command = "systemctl restart rke2-server (on a server) or systemctl restart rke2-agent (on an agent)"
        }
        return "containerd was not restarted (\(why)); it reads \(configPath) only when it starts. Run: \(command) "
            + "- or, where containerd is not a systemd service, stop and start it the way this node runs it "
            + "(SIGHUP does not reload its config)."
    }

    /// Carries out `.systemd`: restarts each active unit; succeeds if at least one restarted.
    /// - Returns: what happened, one line each; `.manual` text when nothing was active.
    public static func restart(
        units: [String],
        commands: any HostCommands,
        timeout: Double,
        flavour: ContainerdFlavour,
        configPath: String
    ) -> (restarted: [String], log: [String]) {
        var restarted: [String] = []
        var log: [String] = []
        for unit in units {
            let active = commands.run("systemctl", ["is-active", "--quiet", unit], timeout: timeout)
            guard active.status == 0 else {
                log.append("\(unit): not active, not restarted")
                continue
            }
            let r = commands.run("systemctl", ["try-restart", unit], timeout: timeout)
            if r.status == 0 {
                restarted.append(unit)
                log.append("\(unit): restarted")
            } else {
                log.append("\(unit): systemctl try-restart failed (\(r.status)): \(r.errors.trimmedLine)")
            }
        }
        if restarted.isEmpty {
            log.append(
                instructions(
                    flavour: flavour,
                    configPath: configPath,
                    why: "none of \(units.joined(separator: ", ")) could be restarted"
                )
            )
        }
        return (restarted, log)
    }
}
