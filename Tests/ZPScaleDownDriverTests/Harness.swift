import Logging
import Testing
import ZPCore
import ZPScaleDown

/// One driver with fakes of everything it commands, a manual clock starting at 1 s, and a
/// scale-down duration of 60 s (idle deadline at 61 s after a start at 1 s).
struct Harness {
    let clock: ManualClock
    let control = FakeControl()
    let checkpoints = FakeCheckpoints()
    let redirect = FakeRedirect()
    let status = FakeStatus()
    let wakeGroup = FakeWakeGroup()
    let log = LogCapture()
    let driver: ScaleDownDriver

    init(
        checkpointing: Bool = true,
        preDump: Bool = false,
        wakeGroup inGroup: Bool = false,
        ports: [UInt16] = [8080],
        withRedirect: Bool = true,
        dryRun: Bool = false,
        startingAt start: ZPInstant = at(1)
    ) {
        clock = ManualClock(now: start)
        let settings = ScaleDownDriver.Settings(
            lifecycle: .init(
                scaleDownDuration: .seconds(60),
                checkpointingEnabled: checkpointing,
                preDump: preDump,
                wakesGroup: inGroup,
                dryRun: dryRun
            ),
            ports: ports
        )
        driver = ScaleDownDriver(
            id: "c1",
            settings: settings,
            control: control,
            checkpoints: checkpoints,
            redirect: withRedirect ? redirect : nil,
            status: status,
            wakeGroup: inGroup ? wakeGroup : nil,
            clock: clock,
            logger: log.logger
        )
    }

    /// Runs the driver while `body` runs, then stops it and waits until `run()` returned.
    func running(_ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [driver] in await driver.run() }
            do {
                try await body()
            } catch {
                await driver.stop()
                throw error
            }
            await driver.stop()
            try await group.waitForAll()
        }
    }

    /// Starts the container (pid 100 at 1 s) and waits until the activator is armed.
    func start() async {
        await driver.started(pid: 100)
        await eventually("activator made") { redirect.activatorMade }
        await eventually("activator armed") { log.contains("scale-down armed") }
    }

    /// Lets the idle deadline pass (61 s) and waits until the container is scaled down.
    func scaleDown(to instant: ZPInstant = at(61)) async {
        clock.advance(to: instant)
        await eventually("scaled down") { driver.phase == .scaledDown }
    }

    /// Moves the clock on in `step`s (the driver's polls run on it) until `condition` holds.
    func advance(
        until what: String,
        step: Duration = .milliseconds(50),
        sourceLocation: SourceLocation = #_sourceLocation,
        _ condition: () -> Bool
    ) async {
        for _ in 0..<2_000 {
            if condition() { return }
            clock.advance(by: step)
            try? await Task.sleep(for: .milliseconds(1))
        }
        Issue.record("not reached after 2000 clock steps: \(what)", sourceLocation: sourceLocation)
    }

    /// Starts the container, lets it scale down at 61 s and waits for the restore prepared after
    /// the checkpoint.
    func scaledDownWithPreparedRestore(
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws
        -> FakePreparation
    {
        await start()
        await scaleDown()
        return try #require(await preparedRestore(), sourceLocation: sourceLocation)
    }

    /// Waits until the restore prepared after the checkpoint was handed to the driver.
    func preparedRestore(_ count: Int = 1) async -> FakePreparation? {
        await eventually("restore prepared") {
            log.contains("restore prepared") && checkpoints.preparations.count >= count
        }
        return checkpoints.preparations.last
    }
}
