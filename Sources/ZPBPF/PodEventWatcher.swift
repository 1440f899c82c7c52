import CZPBPF
import Glibc
import Synchronization
import SystemPackage
import ZPSystem

/// Reads a pod's `zp_events` ring (libbpf's ring buffer, epoll-readable) on one thread of its own
/// and hands each event to the stream of its owner (decision 0045).
///
/// The thread blocks in `poll(2)` on the ring's epoll descriptor and the read end of a pipe;
/// ``shutdown()`` closes the pipe's write end and finishes every stream, and the thread frees the
/// ring and exits. The thread owns the ring and the read end; this object owns the write end.
final class PodEventWatcher: Sendable {
    private struct Subscriber {
        var id: Int
        var continuation: AsyncStream<PodWakeEvent>.Continuation
    }

    private let subscribers = Mutex<(next: Int, table: [UInt32: Subscriber])>((0, [:]))
    private let stopSignal: SharedDescriptor
    private let stopped = Atomic<Bool>(false)

    /// Starts the thread on a duplicate of the ring map's descriptor.
    /// - Throws: `BPFError.system` when the duplicate, the pipe or the ring cannot be opened.
    init(eventsMap: SharedDescriptor) throws(BPFError) {
        let map = try bpfSystem { () throws(SystemError) -> OwnedDescriptor in try eventsMap.duplicate() }
        let pipe = try bpfSystem { () throws(SystemError) -> PipeEnds in try OwnedDescriptor.pipe() }
        let signal = pipe.writeEnd
        let wakeUp = SharedDescriptor(pipe.readEnd)
        // The ring is opened here, so that a failure reaches the caller; then it moves to the
        // thread, which alone uses and frees it. Its address travels as an integer (a C pointer is
        // not Sendable); nothing on this side touches it again.
        let ring = try libbpfPointer("ring_buffer__new", "zp_events") { czpbpf_events_open(map.rawValue) }
        stopSignal = SharedDescriptor(signal)
        let ringAddress = Int(bitPattern: UnsafeRawPointer(ring))
        let mapKeptOpen = SharedDescriptor(map)  // the ring maps it; closed when the thread ends
        Threads.startDetached { [self] in
            let ring = OpaquePointer(bitPattern: ringAddress)!
            self.serve(ring: ring, stop: wakeUp)
            czpbpf_events_close(ring)
            mapKeptOpen.close()
            wakeUp.close()
        }
    }

    /// The events of `owner`; replaces (finishes) an earlier stream of the same owner.
    func subscribe(owner: UInt32) -> AsyncStream<PodWakeEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: PodWakeEvent.self,
            bufferingPolicy: .bufferingNewest(16)
        )
        let (id, previous) = subscribers.withLock { state -> (Int, AsyncStream<PodWakeEvent>.Continuation?) in
            state.next += 1
            defer { state.table[owner] = Subscriber(id: state.next, continuation: continuation) }
            return (state.next, state.table[owner]?.continuation)
        }
        previous?.finish()
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { state in
                // Only this stream's own entry; a newer subscription of the owner stays.
                if state.table[owner]?.id == id { state.table[owner] = nil }
            }
        }
        if stopped.load(ordering: .acquiring) { continuation.finish() }
        return stream
    }

    /// Stops the thread and finishes every stream. Idempotent.
    func shutdown() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stopSignal.close()  // the thread's poll sees the pipe's end
        let all = subscribers.withLock { state -> [AsyncStream<PodWakeEvent>.Continuation] in
            defer { state.table = [:] }
            return state.table.values.map(\.continuation)
        }
        for continuation in all { continuation.finish() }
    }

    private func serve(ring events: OpaquePointer, stop: SharedDescriptor) {
        var fds = [
            pollfd(fd: czpbpf_events_fd(events), events: Int16(POLLIN), revents: 0),
            pollfd(fd: stop.rawValue, events: Int16(POLLIN), revents: 0),
        ]
        var buffer = [czpbpf_event](repeating: czpbpf_event(), count: 64)
        while !stopped.load(ordering: .acquiring) {
            let rc = poll(&fds, 2, -1)
            if rc < 0 {
                if errno == EINTR { continue }
                break
            }
            if fds[1].revents != 0 { break }
            let count = buffer.withUnsafeMutableBufferPointer {
                czpbpf_events_drain(events, $0.baseAddress, CInt($0.count))
            }
            guard count > 0 else { continue }
            for event in buffer.prefix(Int(count)) { deliver(event) }
        }
    }

    private func deliver(_ raw: czpbpf_event) {
        let kind: PodWakeEvent.Kind
        switch raw.kind {
        case 1: kind = .connection
        case 2: kind = .heldConnection
        default: return
        }
        let event = PodWakeEvent(kind: kind, port: UInt16(truncatingIfNeeded: raw.port), owner: raw.owner)
        let continuation = subscribers.withLock { $0.table[raw.owner]?.continuation }
        continuation?.yield(event)
    }
}
