// Room for the manager's node service.
//
// The node manager (ZPManager, `zeropod-manager`) will serve a node API of its own on
// `<run-dir>/node.sock` (``NodeLayout/nodeSocket`` in ZPCore) and, for migration, between nodes.
// Its messages, method names and typed client belong in this folder, hand-written on ZPCore's
// protobuf codec like the status API (decision 0001), with a `.proto` fixture and golden tests in
// Tests/ZPAPITests. The manager and the CLI then import ZPAPI for it, never the manager itself.

/// The manager's node service: its messages and client go here (`Sources/ZPAPI/Node/`).
/// Nothing is served yet.
public enum NodeAPI {}
