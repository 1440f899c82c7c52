import ZPAPI
import ZPCore
import ZPTTRPC

extension ShimStatusBoard {
    /// Wraps the task API's `Create`, `Start` and `Delete` handlers in `router` so that the board
    /// learns each container without changes to the task service: after a successful `Create` it
    /// registers the id with the pod labels from the bundle's annotations and the pid runc created;
    /// after the init's `Start`, phase `running` and the pid; after the init's `Delete`, removal.
    ///
    /// The scale-to-zero driver reports everything in between (checkpointing, scaled down,
    /// restores, failures) with ``update(id:phase:pid:event:)``; repeated reports of the same phase
    /// and pid are not published twice.
    ///
    /// - Parameters:
    ///   - router: The task service's router.
    ///   - services: The task service names to wrap (v2 and v3).
    /// - Returns: The router with the three handlers wrapped.
    public func tracking(_ router: TTRPCRouter, services: [String] = TaskService.serviceNames) -> TTRPCRouter {
        var router = router
        for service in services {
            if let create = router.unaryHandler(service: service, method: "Create") {
                router.register(service: service, method: "Create") { [self] call in
                    let response = try await create(call)
                    if let request = try? CreateTaskRequest(decoding: call.payload) {
                        register(id: request.id, annotations: BundleConfig(bundle: request.bundle).annotations)
                        if let created = try? PidResponse(decoding: response), created.pid > 0 {
                            update(id: request.id, pid: Int32(created.pid))
                        }
                    }
                    return response
                }
            }
            if let start = router.unaryHandler(service: service, method: "Start") {
                router.register(service: service, method: "Start") { [self] call in
                    let response = try await start(call)
                    if let request = try? TaskProcessRequest(decoding: call.payload), request.execID.isEmpty,
                        let started = try? PidResponse(decoding: response)
                    {
                        update(id: request.id, phase: .running, pid: Int32(started.pid))
                    }
                    return response
                }
            }
            if let delete = router.unaryHandler(service: service, method: "Delete") {
                router.register(service: service, method: "Delete") { [self] call in
                    let response = try await delete(call)
                    if let request = try? TaskProcessRequest(decoding: call.payload), request.execID.isEmpty {
                        remove(id: request.id)
                    }
                    return response
                }
            }
        }
        return router
    }
}

extension ShimStatusBoard {
    /// Reports one event of a container's lifecycle state machine and the phase it reached, so
    /// that the driver's wiring is one call after each `ContainerLifecycle.event(_:)`.
    ///
    /// Pids come from `started`, `restoreFinished` and `coldStartFinished`; checkpoint and restore
    /// results become ``StatusAPI/Event`` values (a failed cold start counts as a failed restore,
    /// as in the original). Other events only carry the phase.
    ///
    /// - Parameters:
    ///   - id: The containerd container id.
    ///   - event: The event just fed to the state machine.
    ///   - phase: The state machine's phase after it.
    public func record(id: String, event: ContainerLifecycle.Event, phase: ContainerLifecycle.Phase) {
        switch event {
        case .started(let pid, _), .coldStartFinished(let pid, _):
            update(id: id, phase: phase, pid: pid)
        case .checkpointFinished(let duration):
            update(id: id, phase: phase, event: .checkpointFinished(duration: duration))
        case .checkpointFailed(let reason, _):
            update(id: id, phase: phase, event: .checkpointFailed(reason: reason))
        case .restoreFinished(let pid, let duration, _):
            update(id: id, phase: phase, pid: pid, event: .restoreFinished(duration: duration))
        case .restoreFailed(let reason):
            update(id: id, phase: phase, event: .restoreFailed(reason: reason))
        case .coldStartFailed(let reason):
            update(id: id, phase: phase, event: .restoreFailed(reason: "cold start: " + reason))
        case .idleDeadlineReached, .activitySeen, .redirectUnavailable, .connectionArrived, .probeArrived,
            .execStarted, .execEnded, .killRequested, .processExited, .deleteRequested, .preDumpDeadlineReached,
            .preDumpFinished, .preDumpFailed, .lazyRestoreFailed, .groupWakeRequested:
            update(id: id, phase: phase)
        }
    }
}
