import Logging
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

// The restore side (decision 0009, 0017): the driver feeds its observations to the
// `RestoreSupervision` value and carries out what it decides. What stays here is observation (is
// the lazy-pages daemon gone? how did it end?) and the effects.
extension ScaleDownDriver {
    /// Applies `event` to the restore supervision under the lock and carries out its effects after.
    func superviseRestoreSide(_ event: Supervision.Event) async {
        let step = state.withLock { $0.restoreSide.event(event) }
        await carryOut(step.effects)
    }

    /// Carries out the restore supervision's effects, in order.
    func carryOut(_ effects: [Supervision.Effect]) async {
        for effect in effects {
            switch effect {
            case .discard(let prepared):
                prepared.discard()
            case .removeImages:
                checkpoints.removeImages()
            case .judgeDaemonEnd(let ticket, let prepared):
                let (clean, how) = await prepared.daemonEnd()
                if clean {
                    logger.info(
                        "lazy restore: \(prepared.lazyDaemon ?? "criu lazy-pages") finished",
                        metadata: ["end": "\(how)"]
                    )
                }
                await superviseRestoreSide(.daemonJudged(ticket, clean: clean, how: how))
            case .stopBusyDaemon(let prepared):
                logger.warning(
                    "lazy restore: \(prepared.lazyDaemon ?? "criu lazy-pages") killed (busy past a checkpoint's limit of \(settings.busyDaemonLimit.components.seconds) s, or no progress for \(settings.daemonStallLimit.components.seconds) s)"
                )
                prepared.discard()
            case .killRestoredProcesses(let reason):
                logger.error("lazy restore: \(reason); killing the container's processes")
                publishStatus(.restoreFailed, duration: nil, reason: reason)
                do {
                    try await control.signal(SIGKILL, allProcesses: true)
                } catch {
                    logger.error("lazy restore: killing the untrusted processes of container \(id) failed: \(error)")
                }
            case .resumeCheckpoint(let refusal):
                let waiting = state.withLock { s in
                    defer { s.checkpointWait = nil }
                    return s.checkpointWait
                }
                waiting?.resume(returning: refusal)
            }
        }
    }

    /// Before a checkpoint or pre-dump: waits while a lazy restore's daemon still serves pages or
    /// is judged (the process must have all its pages before it is dumped).
    /// - Returns: why the checkpoint must not run (the process was killed instead); nil to go on.
    func checkpointClearance() async -> String? {
        await observeDaemon()
        let now = clock.now()
        return await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            let step = state.withLock { s in
                let step = s.restoreSide.event(.checkpointRequested(now: now))
                if case .checkpoint(.waitForDaemon) = step.answer { s.checkpointWait = continuation }
                return step
            }
            precondition(step.effects.isEmpty, "checkpointRequested has no effects")
            switch step.answer {
            case .checkpoint(.clear): continuation.resume(returning: nil)
            case .checkpoint(.refused(let reason)): continuation.resume(returning: reason)
            case .checkpoint(.waitForDaemon): break  // resumed by resumeCheckpoint
            case .none, .runPrepared, .runWithoutPreparation:
                preconditionFailure("answer \(step.answer) to checkpointRequested")
            }
        }
    }

    /// Looks at the serving daemon once and reports it.
    func observeDaemon() async {
        guard let (ticket, prepared) = state.withLock({ $0.restoreSide.serving }) else { return }
        let exited = prepared.daemonExited()
        let progress = exited ? nil : prepared.daemonProgress()
        await superviseRestoreSide(.daemonObserved(ticket, exited: exited, progress: progress, now: clock.now()))
    }

    /// Looks at a serving lazy-pages daemon every `daemonPollInterval` until cancelled (the daemon
    /// is a child of the shim whose end the reaper may collect first: its exit is observed, not
    /// awaited), and at restored listeners whose backlog was raised (decision 0056). While there is
    /// neither, it waits for the next restore without a timer: a scaled-down or idle pod costs
    /// the node no wake-ups.
    func watchLazyPages() async {
        var wakes = watchWake.makeAsyncIterator()
        while !Task.isCancelled {
            let watching =
                state.withLock { $0.restoreSide.serving != nil } || (redirect?.hasRestoredListenersToSettle ?? false)
            if !watching {
                guard await wakes.next() != nil else { return }
                continue
            }
            do {
                try await clock.sleep(until: clock.now().advanced(by: settings.daemonPollInterval))
            } catch {
                return
            }
            await observeDaemon()
            redirect?.settleRestoredListeners()
        }
    }
}
