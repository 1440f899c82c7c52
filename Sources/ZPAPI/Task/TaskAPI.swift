// The names of containerd's task service (containerd/api/runtime/task/v2 and v3, shim.proto), which
// the shim serves and ``ShimTaskClient`` calls.

/// The service and method names of containerd's task API, and its namespace metadata key.
public enum TaskAPI {
    /// `containerd.task.v2.Task` (containerd 1.6 and later).
    public static let serviceV2 = "containerd.task.v2.Task"
    /// `containerd.task.v3.Task` (containerd 2.x; the same messages as v2).
    public static let serviceV3 = "containerd.task.v3.Task"
    /// Both service names; the shim serves the same methods under each.
    public static let serviceNames = [serviceV2, serviceV3]
    /// The ttrpc metadata key that carries the containerd namespace of a call.
    public static let namespaceMetadataKey = "containerd-namespace-ttrpc"

    /// The method names of the task service.
    public enum Method: String, Sendable, CaseIterable {
        /// `CreateTaskRequest` → `CreateTaskResponse` (``PidResponse``).
        case create = "Create"
        /// ``TaskProcessRequest`` → `StartResponse` (``PidResponse``).
        case start = "Start"
        /// ``TaskProcessRequest`` → ``StateResponse``.
        case state = "State"
        /// ``KillRequest`` → Empty.
        case kill = "Kill"
        /// ``TaskProcessRequest`` → ``DeleteResponse``.
        case delete = "Delete"
        /// ``TaskProcessRequest`` → ``WaitResponse``.
        case wait = "Wait"
        /// ``ExecProcessRequest`` → Empty.
        case exec = "Exec"
        /// ``TaskIDRequest`` → ``PidsResponse``.
        case pids = "Pids"
        /// ``TaskIDRequest`` → ``StatsResponse``.
        case stats = "Stats"
        /// ``UpdateTaskRequest`` → Empty.
        case update = "Update"
        /// ``CloseIORequest`` → Empty.
        case closeIO = "CloseIO"
        /// ``TaskIDRequest`` → ``ConnectResponse``.
        case connect = "Connect"
        /// ``TaskIDRequest`` (with `now`) → Empty.
        case shutdown = "Shutdown"
        /// `ResizePtyRequest` → Empty.
        case resizePty = "ResizePty"
        /// `PauseRequest` → Empty.
        case pause = "Pause"
        /// `ResumeRequest` → Empty.
        case resume = "Resume"
        /// `CheckpointTaskRequest` → Empty.
        case checkpoint = "Checkpoint"
    }
}
