// Fakes of the driver's protocols: they record what the driver asked for and answer as the test
// scripted. A manual clock makes every timer and poll deterministic.
import Logging
import Synchronization
import Testing
import ZPCore
import ZPScaleDown

/// An error a fake throws when scripted to fail.
struct FakeFailure: Error, CustomStringConvertible, Equatable {
    var description: String
}

/// An instant `seconds` after the clock's origin.
func at(_ seconds: Double) -> ZPInstant { ZPInstant(nanoseconds: UInt64(seconds * 1_000_000_000)) }

/// Holds an operation until the test opens it.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>], arrived: Int)>(
        (false, [], 0)
    )

    /// Waits until ``open()`` (at once if it was).
    func pass() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let passNow = state.withLock { s -> Bool in
                s.arrived += 1
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if passNow { c.resume() }
        }
    }

    /// How many reached the gate.
    var arrived: Int { state.withLock { $0.arrived } }

    /// Lets everyone through, now and later.
    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }
}

/// What a scripted operation does.
enum Outcome: Sendable {
    case succeed
    case fail(String)
    /// Waits at the gate, then succeeds.
    case hold(Gate)
    /// Waits at the gate, then fails.
    case holdThenFail(Gate, String)

    func play() async throws {
        switch self {
        case .succeed: return
        case .fail(let reason): throw FakeFailure(description: reason)
        case .hold(let gate): await gate.pass()
        case .holdThenFail(let gate, let reason):
            await gate.pass()
            throw FakeFailure(description: reason)
        }
    }
}

/// A queue of outcomes; `.succeed` when empty.
final class Script: Sendable {
    private let outcomes: Mutex<[Outcome]>
    init(_ outcomes: [Outcome] = []) { self.outcomes = Mutex(outcomes) }
    func set(_ list: [Outcome]) { outcomes.withLock { $0 = list } }
    func next() -> Outcome {
        outcomes.withLock { $0.isEmpty ? .succeed : $0.removeFirst() }
    }
}

/// A clock that moves only when the test says so.
final class ManualClock: ScaleDownClock {
    private struct Sleeper {
        var deadline: ZPInstant
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var now: ZPInstant
        var sleepers: [Int: Sleeper] = [:]
        var cancelled: Set<Int> = []
        var nextID = 0
    }
    private let state: Mutex<State>

    init(now: ZPInstant = at(1)) { state = Mutex(State(now: now)) }

    func now() -> ZPInstant { state.withLock { $0.now } }

    func sleep(until deadline: ZPInstant) async throws {
        let id = state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                enum Now { case wait, pass, cancel }
                let now = state.withLock { s -> Now in
                    if s.cancelled.remove(id) != nil { return .cancel }
                    if deadline <= s.now { return .pass }
                    s.sleepers[id] = Sleeper(deadline: deadline, continuation: c)
                    return .wait
                }
                switch now {
                case .wait: break
                case .pass: c.resume()
                case .cancel: c.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let sleeper = state.withLock { s -> Sleeper? in
                if let sleeper = s.sleepers.removeValue(forKey: id) { return sleeper }
                s.cancelled.insert(id)
                return nil
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock to `instant` and wakes every sleeper whose deadline passed.
    func advance(to instant: ZPInstant) {
        let due = state.withLock { s -> [Sleeper] in
            if instant > s.now { s.now = instant }
            let due = s.sleepers.filter { $0.value.deadline <= s.now }
            for key in due.keys { s.sleepers[key] = nil }
            return Array(due.values)
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Moves the clock on by `duration`.
    func advance(by duration: Duration) { advance(to: now().advanced(by: duration)) }

    /// The deadlines slept on now.
    var sleepingUntil: [ZPInstant] { state.withLock { $0.sleepers.values.map(\.deadline).sorted() } }
}

/// runc and the container's processes.
final class FakeControl: ScaleDownContainerControl {
    struct Recorded: Sendable {
        var signals: [(signal: Int32, all: Bool)] = []
        var coldStarts = 0
        var adopted: [Int32] = []
        var watched: [Int32] = []
        var exits: [Int32] = []
    }
    let recorded = Mutex(Recorded())
    let coldStartScript = Script()
    let coldStartPid = Mutex<Int32>(300)
    let earlyExits = Mutex<[Int32: Int32]>([:])
    let ports = Mutex<[UInt16]>([])

    func signal(_ signal: Int32, allProcesses: Bool) async throws {
        recorded.withLock { $0.signals.append((signal, allProcesses)) }
    }

    func coldStart() async throws -> Int32 {
        recorded.withLock { $0.coldStarts += 1 }
        try await coldStartScript.next().play()
        return coldStartPid.withLock { $0 }
    }

    func adoptRestoredInit(pid: Int32) async { recorded.withLock { $0.adopted.append(pid) } }

    func watchExits(of pid: Int32) -> Int32? {
        recorded.withLock { $0.watched.append(pid) }
        return earlyExits.withLock { $0.removeValue(forKey: pid) }
    }

    func reportExit(status: Int32) async { recorded.withLock { $0.exits.append(status) } }

    func listeningPorts(ofTreeAt pid: Int32) -> [UInt16] { ports.withLock { $0 } }

    /// Ports another process of the pod listens on.
    let othersPorts = Mutex<[UInt16]>([])

    func portsServedByOthers(_ ports: [UInt16], treeAt pid: Int32) -> [UInt16] {
        othersPorts.withLock { others in ports.filter { others.contains($0) } }
    }

    /// Connections waiting in the application's accept queues.
    let queued = Mutex(0)
    /// The namespace's listener pressure counter.
    let pressure = Mutex<UInt64?>(nil)

    func pendingConnections(on ports: [UInt16], treeAt pid: Int32) -> PendingConnections {
        PendingConnections(queued: queued.withLock { $0 }, listenerPressure: pressure.withLock { $0 })
    }

    var signals: [(signal: Int32, all: Bool)] { recorded.withLock { $0.signals } }
    var exits: [Int32] { recorded.withLock { $0.exits } }
    var adopted: [Int32] { recorded.withLock { $0.adopted } }
}

/// A prepared restore.
final class FakePreparation: PreparedRestore, CustomStringConvertible {
    struct State: Sendable {
        var runs = 0
        var discards = 0
        var daemonExited = false
        var daemonEnd: (clean: Bool, how: String) = (true, "exit code 0, reaped by the driver")
    }
    let name: String
    let lazyDaemon: String?
    let lazyFallbackReason: String?
    let runScript: Script
    let restoredPid: Int32
    let state = Mutex(State())

    init(name: String, lazy: Bool, restoredPid: Int32 = 200, run: [Outcome] = [], fallback: String? = nil) {
        self.name = name
        self.lazyDaemon = lazy ? "criu lazy-pages (pid 900)" : nil
        self.lazyFallbackReason = fallback
        self.runScript = Script(run)
        self.restoredPid = restoredPid
    }

    var summary: [String: String] { ["lazy": "\(lazyDaemon != nil)"] }
    var description: String { name }

    func run() async throws -> RestoredProcess {
        state.withLock { $0.runs += 1 }
        try await runScript.next().play()
        return RestoredProcess(pid: restoredPid, details: ["criu": "fake"])
    }

    func daemonExited() -> Bool { lazyDaemon == nil || state.withLock { $0.daemonExited || $0.discards > 0 } }
    func daemonEnd() async -> (clean: Bool, how: String) { state.withLock { $0.daemonEnd } }
    func discard() { state.withLock { $0.discards += 1 } }

    /// The daemon ends (as the watcher will see at its next look).
    func endDaemon(clean: Bool, how: String) {
        state.withLock {
            $0.daemonExited = true
            $0.daemonEnd = (clean, how)
        }
    }

    var runs: Int { state.withLock { $0.runs } }
    var discards: Int { state.withLock { $0.discards } }
}

/// CRIU and the images.
final class FakeCheckpoints: ScaleDownCheckpoints {
    struct Recorded: Sendable {
        var calls: [String] = []
        var imageRemovals = 0
        var preparations: [FakePreparation] = []
    }
    let recorded = Mutex(Recorded())
    let checkpointScript = Script()
    let preDumpScript = Script()
    let prepareScript = Script()
    let fullRestoreScript = Script()
    /// Whether the next preparations are lazy.
    let lazy = Mutex(false)
    /// How the next preparation's run goes.
    let preparedRunScript = Mutex<[Outcome]>([])
    let fullRestorePid = Mutex<Int32>(250)

    func checkpoint(incremental: Bool) async throws -> ScaleDownReport {
        recorded.withLock { $0.calls.append(incremental ? "checkpoint incremental" : "checkpoint") }
        try await checkpointScript.next().play()
        return ScaleDownReport(details: ["criu": "fake"])
    }

    func preDump() async throws -> ScaleDownReport {
        recorded.withLock { $0.calls.append("preDump") }
        try await preDumpScript.next().play()
        return ScaleDownReport()
    }

    func prepareRestore() async throws -> any PreparedRestore {
        let number = recorded.withLock { r -> Int in
            r.calls.append("prepareRestore")
            return r.preparations.count + 1
        }
        try await prepareScript.next().play()
        let preparation = FakePreparation(
            name: "p\(number)",
            lazy: lazy.withLock { $0 },
            restoredPid: 200 + Int32(number),
            run: preparedRunScript.withLock { $0 }
        )
        recorded.withLock { $0.preparations.append(preparation) }
        return preparation
    }

    func restoreFully() async throws -> RestoredProcess {
        recorded.withLock { $0.calls.append("restoreFully") }
        try await fullRestoreScript.next().play()
        return RestoredProcess(pid: fullRestorePid.withLock { $0 })
    }

    func removeImages() { recorded.withLock { $0.imageRemovals += 1 } }

    var calls: [String] { recorded.withLock { $0.calls } }
    var imageRemovals: Int { recorded.withLock { $0.imageRemovals } }
    var preparations: [FakePreparation] { recorded.withLock { $0.preparations } }
}

/// The pod's redirect and its activator.
final class FakeRedirect: ScaleDownRedirect {
    struct Recorded: Sendable {
        var madeFor: [[UInt16]] = []
        var offs = 0
        var lastActivity: ZPInstant?
        var openConnections = 0
    }
    let recorded = Mutex(Recorded())
    let makeScript = Script()
    let activator = FakeActivator()
    let connection = Mutex<(@Sendable () async throws -> Void)?>(nil)

    var location: String { "/var/run/netns/fake" }

    func makeActivator(
        ports: [UInt16],
        connection: @escaping @Sendable () async throws -> Void
    ) async throws -> any ScaleDownActivator {
        recorded.withLock { $0.madeFor.append(ports) }
        try await makeScript.next().play()
        self.connection.withLock { $0 = connection }
        return activator
    }

    func redirectOff(ports: [UInt16]) throws { recorded.withLock { $0.offs += 1 } }

    func activity(ports: [UInt16]) -> (lastActivity: ZPInstant?, openConnections: Int) {
        recorded.withLock { ($0.lastActivity, $0.openConnections) }
    }

    /// A client connects through the activator: the driver's hook decides.
    func connect() async throws {
        guard let hook = connection.withLock({ $0 }) else { throw FakeFailure(description: "no activator yet") }
        try await hook()
    }

    var activatorMade: Bool { recorded.withLock { !$0.madeFor.isEmpty } }
    var offs: Int { recorded.withLock { $0.offs } }
}

final class FakeActivator: ScaleDownActivator {
    let ons = Mutex(0)
    let onScript = Script()

    func run() async throws {
        // Serves until cancelled.
        let (stream, _) = AsyncStream.makeStream(of: Void.self)
        for await _ in stream {}
    }

    func redirectOn() throws {
        ons.withLock { $0 += 1 }
        if case .fail(let reason) = onScript.next() { throw FakeFailure(description: reason) }
    }

    var redirectOns: Int { ons.withLock { $0 } }
}

final class FakeStatus: ScaleDownStatusSink {
    let changes = Mutex<[(ContainerLifecycle.Phase, Int32?, ScaleDownStatusReport?)]>([])
    func containerChanged(phase: ContainerLifecycle.Phase, pid: Int32?, report: ScaleDownStatusReport?) {
        changes.withLock { $0.append((phase, pid, report)) }
    }
    var reports: [ScaleDownStatusReport] { changes.withLock { $0.compactMap(\.2) } }
}

final class FakeWakeGroup: ScaleDownWakeGroup {
    let state = Mutex((requests: 0, running: false, left: false))
    func requestWake() { state.withLock { $0.requests += 1 } }
    func run() async {
        state.withLock { $0.running = true }
        let (stream, _) = AsyncStream.makeStream(of: Void.self)
        for await _ in stream {}
    }
    func leave() { state.withLock { $0.left = true } }
    var requests: Int { state.withLock { $0.requests } }
    var left: Bool { state.withLock { $0.left } }
}

/// Keeps every log line.
final class LogCapture: Sendable {
    let lines = Mutex<[(Logger.Level, String)]>([])

    var logger: Logger {
        Logger(label: "test") { _ in Handler(capture: self) }
    }

    func contains(_ text: String, level: Logger.Level? = nil) -> Bool {
        lines.withLock { $0.contains { $0.1.contains(text) && (level == nil || $0.0 == level) } }
    }

    var all: [String] { lines.withLock { $0.map { "\($0.0): \($0.1)" } } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.lines.withLock { $0.append((event.level, event.message.description)) }
        }
    }
}

/// Waits (real time, up to `seconds`) until `condition` holds; records an issue if it never does.
func eventually(
    _ what: String,
    within seconds: Double = 20,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while !condition() {
        if ContinuousClock.now >= deadline {
            Issue.record("not reached within \(seconds) s: \(what)", sourceLocation: sourceLocation)
            return
        }
        try? await Task.sleep(for: .milliseconds(1))
    }
}
