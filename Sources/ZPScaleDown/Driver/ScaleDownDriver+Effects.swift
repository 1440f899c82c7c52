import Logging
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

// The lifecycle's effects, carried out by the driver's one consumer task (or inline by it, for
// completions it feeds back). Every case is handled; none is "settled elsewhere".
extension ScaleDownDriver {
    func perform(_ effect: Effect) async {
        switch effect {
        case .armIdleTimer(let deadline):
            armTimer(.idle, at: deadline)
        case .cancelIdleTimer:
            cancelTimers()
        case .armPreDumpTimer(let deadline):
            armTimer(.preDump, at: deadline)
        case .enableRedirect:
            let activator = state.withLock { $0.activator }
            do {
                try activator?.redirectOn()
            } catch {
                logger.warning("redirect on failed: \(error)")
                await feedInline(.redirectUnavailable(reason: "\(error)"))
            }
        case .disableRedirect:
            do { try redirectOff() } catch { logger.warning("redirect off failed: \(error)") }
        case .startCheckpoint:
            await checkpoint(incremental: false)
        case .startIncrementalCheckpoint:
            await checkpoint(incremental: true)
        case .startPreDump:
            await preDump()
        case .startScaleDownKill:
            do {
                try await control.signal(SIGKILL, allProcesses: true)
            } catch {
                logger.warning("scale-down kill failed: \(error)")
            }
        case .startRestore:
            await restore()
        case .startFullRestore:
            await restoreFully(since: clock.now())
        case .startColdStart:
            await coldStart()
        case .releaseHeldConnections:
            let held = state.withLock { s in
                defer { s.heldConnections = [] }
                return s.heldConnections
            }
            for connection in held { connection.release() }
        case .failHeldConnections:
            let held = state.withLock { s in
                defer { s.heldConnections = [] }
                return s.heldConnections
            }
            let error = ScaleDownError("container \(id) could not be brought back")
            for connection in held { connection.fail(error) }
        case .startHeldExecs(let ids):
            for continuation in takeHeldExecs(ids) { continuation.resume() }
        case .failHeldExecs(let ids):
            let error = ScaleDownError("container \(id) could not be brought back")
            for continuation in takeHeldExecs(ids) { continuation.resume(throwing: error) }
        case .signalProcess(let signal):
            do {
                try await control.signal(signal, allProcesses: false)
            } catch {
                logger.warning("deferred signal \(signal) failed: \(error)")
            }
        case .emitStatus(let status, let duration, let reason):
            var metadata: Logger.Metadata = ["status": "\(status)"]
            if let duration { metadata["duration"] = "\(Self.milliseconds(duration))" }
            if let reason { metadata["reason"] = "\(reason)" }
            logger.info("status \(status)", metadata: metadata)
            publishStatus(status, duration: duration, reason: reason)
        case .reportExit(let status):
            await control.reportExit(status: status)
        case .cleanupImages:
            await superviseRestoreSide(.imagesObsolete)
        case .cleanupAll:
            await superviseRestoreSide(.containerDeleted)
            try? redirectOff()
        case .wakeGroup:
            wakeGroup?.requestWake()  // callers carry it out at once; from the consumer it is just as good
        case .emitDryRun(let decision):
            reportDryRun(decision)
        }
    }

    /// A dry run's decision: the log line (the original's wording, "would have …") and the status
    /// sink's event; the phase and pid stay as they are (the process keeps running).
    func reportDryRun(_ decision: ContainerLifecycle.DryRunDecision) {
        let report: ScaleDownStatusReport
        switch decision {
        case .wouldScaleDown:
            let idle = GoDuration.format(settings.lifecycle.scaleDownDuration)
            logger.info(
                "dry run: would have scaled down after \(idle) of inactivity",
                metadata: ["dryRun": "wouldScaleDown"]
            )
            report = .wouldScaleDown
        case .wouldRestore(let wake):
            let cause: String
            switch wake {
            case .traffic(let at): cause = "traffic \(Self.milliseconds(at.duration(to: clock.now()))) ago"
            case .exec(let execID): cause = "exec \(execID)"
            case .redirectLost: cause = "the redirect is gone"
            }
            logger.info("dry run: would have restored (\(cause))", metadata: ["dryRun": "wouldRestore"])
            report = .wouldRestore
        }
        guard let sink = self.status else { return }
        let (phase, pid) = state.withLock { ($0.lifecycle.phase, $0.lifecycle.pid) }
        sink.containerChanged(phase: phase, pid: pid, report: report)
    }

    private func takeHeldExecs(_ ids: [String]) -> [CheckedContinuation<Void, any Error>] {
        state.withLock { s in ids.compactMap { s.heldExecs.removeValue(forKey: $0) } }
    }

    /// Hands a status change to the status sink: the phase and pid as they are now, and the
    /// checkpoint or restore it reports.
    func publishStatus(_ status: ContainerLifecycle.StatusPhase, duration: Duration?, reason: String?) {
        guard let sink = self.status else { return }
        let (phase, pid) = state.withLock { ($0.lifecycle.phase, $0.lifecycle.pid) }
        let report: ScaleDownStatusReport?
        switch status {
        case .scaledDown: report = duration.map { .checkpointed(duration: $0) }
        case .running: report = duration.map { .restored(duration: $0) }
        case .checkpointFailed: report = .checkpointFailed(reason: reason ?? "checkpoint failed")
        case .restoreFailed: report = .restoreFailed(reason: reason ?? "restore failed")
        case .stopping: report = nil
        }
        sink.containerChanged(phase: phase, pid: pid, report: report)
    }

    func redirectOff() throws {
        guard let redirect else { return }
        try redirect.redirectOff(ports: state.withLock { $0.ports })
    }

    // MARK: checkpoint

    /// The final checkpoint (`incremental`: on top of the pre-dump). The logged and reported time
    /// is this checkpoint's; a plain retry after a failed incremental one continues its clock.
    private func checkpoint(incremental: Bool) async {
        if let refusal = await checkpointClearance() {
            // The last lazy restore's daemon ended too early: the process was killed, not dumped.
            await feedInline(.checkpointFailed(reason: refusal, now: clock.now()))
            return
        }
        // Checked again at every scale-down: another container may listen on a mapped port only
        // now. Nothing is dumped, and scale-down stays off.
        if let conflict = portsOfOthers(state.withLock { $0.ports }) {
            logger.error("scale-down is off: \(conflict)")
            await feedInline(.checkpointFailed(reason: conflict, now: clock.now()))
            await feedInline(.redirectUnavailable(reason: conflict))
            return
        }
        let start = state.withLock { s in s.checkpointStart ?? clock.now() }
        do {
            let report = try await checkpoints.checkpoint(incremental: incremental)
            let total = start.duration(to: clock.now())
            var metadata = Self.metadata(report.details)
            if incremental { metadata["parent"] = "pre-dump" }
            logger.info("checkpointing done in \(Self.milliseconds(total))", metadata: metadata)
            await feedInline(.checkpointFinished(duration: total))
            await prepareRestoreIfScaledDown()
        } catch {
            logger.warning(incremental ? "incremental checkpoint failed: \(error)" : "checkpoint failed: \(error)")
            // After an incremental one the lifecycle orders one plain dump (cleanupImages,
            // startCheckpoint), carried out inside this feed: it keeps this start.
            if incremental { state.withLock { $0.checkpointStart = start } }
            await feedInline(.checkpointFailed(reason: "\(error)", now: clock.now()))
            if incremental { state.withLock { $0.checkpointStart = nil } }
        }
    }

    /// Pre-dumps the running container; it keeps running. Where the kernel cannot track dirty
    /// memory the checkpointer says so without running CRIU's pre-dump, and pre-dumps stay off.
    private func preDump() async {
        if let refusal = await checkpointClearance() {
            await feedInline(.preDumpFailed(reason: refusal))
            return
        }
        let start = clock.now()
        do {
            let report = try await checkpoints.preDump()
            logger.info(
                "pre-dump done in \(Self.milliseconds(start.duration(to: clock.now())))",
                metadata: Self.metadata(report.details)
            )
            await feedInline(.preDumpFinished)
        } catch {
            logger.warning("pre-dump failed; checkpoints of this container are plain dumps from now on: \(error)")
            await feedInline(.preDumpFailed(reason: "\(error)"))
        }
    }

    // MARK: restore

    /// The lifecycle's `startRestore`: the prepared restore if there is one, else a full one.
    private func restore() async {
        guard !state.withLock({ $0.stopped }) else { return }
        let start = clock.now()
        let step = state.withLock { $0.restoreSide.event(.restoreStarted) }
        let prepared: any PreparedRestore
        switch step.answer {
        case .runPrepared(let p): prepared = p
        case .runWithoutPreparation:
            await restoreFully(since: start)
            return
        case .none, .checkpoint:
            preconditionFailure("answer \(step.answer) to restoreStarted")
        }
        if let daemon = prepared.lazyDaemon, prepared.daemonExited() {
            let reason = "\(daemon) exited before the restore"
            logger.warning("lazy restore: \(reason); full restore from the same images")
            await superviseRestoreSide(.preparedRestoreFailed)
            await feedInline(.lazyRestoreFailed(reason: reason))
            return
        }
        let restored: RestoredProcess
        do {
            restored = try await prepared.run()
        } catch {
            await superviseRestoreSide(.preparedRestoreFailed)
            if prepared.lazyDaemon != nil {
                logger.warning("lazy restore failed: \(error); full restore from the same images")
                await feedInline(.lazyRestoreFailed(reason: "\(error)"))
            } else {
                logger.warning("restore failed: \(error)")
                await feedInline(.restoreFailed(reason: "\(error)"))
            }
            return
        }
        // A lazy restore's daemon pushes the remaining pages now; the images stay until it ends.
        await superviseRestoreSide(.preparedRestoreFinished(lazyDaemon: prepared.lazyDaemon))
        await finishRestore(restored, since: start, lazy: prepared.lazyDaemon != nil, prepared: true)
    }

    /// A full restore with a worker of its own: nothing was prepared, or after a lazy one failed
    /// (the lifecycle's `startFullRestore`).
    private func restoreFully(since start: ZPInstant) async {
        guard !state.withLock({ $0.stopped }) else { return }
        do {
            let restored = try await checkpoints.restoreFully()
            await finishRestore(restored, since: start, lazy: false, prepared: false)
        } catch {
            logger.warning("restore failed: \(error)")
            await feedInline(.restoreFailed(reason: "\(error)"))
        }
    }

    /// Adopts the restored init and reports it to the lifecycle, then an exit that came first.
    private func finishRestore(_ restored: RestoredProcess, since start: ZPInstant, lazy: Bool, prepared: Bool) async {
        let total = start.duration(to: clock.now())
        var metadata = Self.metadata(restored.details)
        metadata["lazy"] = "\(lazy)"
        metadata["prepared"] = "\(prepared)"
        logger.info("restored process: \(restored.pid) in \(Self.milliseconds(total))", metadata: metadata)
        watchWakeInput.yield()  // a lazy-pages daemon serves, or restored listeners wait to settle
        await control.adoptRestoredInit(pid: restored.pid)
        await feedInline(.restoreFinished(pid: restored.pid, duration: total, now: clock.now()))
        if let early = control.watchExits(of: restored.pid) {
            await feedInline(.processExited(pid: restored.pid, status: early))
        }
    }

    private func coldStart() async {
        guard !state.withLock({ $0.stopped }) else { return }
        do {
            let pid = try await control.coldStart()
            logger.info("cold started process: \(pid)")
            await feedInline(.coldStartFinished(pid: pid, now: clock.now()))
            if let early = control.watchExits(of: pid) {
                await feedInline(.processExited(pid: pid, status: early))
            }
        } catch {
            logger.error("cold start failed: \(error)")
            await feedInline(.coldStartFailed(reason: "\(error)"))
        }
    }

    /// Right after a checkpoint, while scaled down: prepares the coming restore (CRIU worker, and
    /// when lazy restore applies the `criu lazy-pages` daemon), off the connection's path.
    private func prepareRestoreIfScaledDown() async {
        let wanted = state.withLock { s in
            s.lifecycle.phase == .scaledDown && !s.stopped && !s.restoreSide.hasPreparation
        }
        guard wanted else { return }
        let start = clock.now()
        let prepared: any PreparedRestore
        do {
            prepared = try await checkpoints.prepareRestore()
        } catch {
            logger.warning("restore not prepared (the restore starts its own worker): \(error)")
            return
        }
        if let reason = prepared.lazyFallbackReason {
            logger.warning("lazy restore not prepared, a full restore is: \(reason)")
        }
        logger.info(
            "restore prepared in \(Self.milliseconds(start.duration(to: clock.now())))",
            metadata: Self.metadata(prepared.summary)
        )
        await superviseRestoreSide(.restorePrepared(prepared))
    }

    // MARK: formatting

    static func metadata(_ details: [String: String]) -> Logger.Metadata {
        details.mapValues { .string($0) }
    }

    /// `84.1 ms`: milliseconds with one decimal (ZPSystem's duration text).
    static func milliseconds(_ d: Duration) -> String {
        "\(ZPSystem.milliseconds(d)) ms"
    }
}
