// ttrpc's request/response envelopes (containerd/ttrpc request.proto, proto3) and the well-known
// types they carry (google.rpc.Status, google.protobuf.Any, google.protobuf.Timestamp).

/// `google.protobuf.Any`: a type URL and the encoded message.
public struct ProtobufAny: ProtobufMessage, Equatable {
    public var typeURL: String
    public var value: [UInt8]

    public init(typeURL: String, value: [UInt8]) {
        self.typeURL = typeURL
        self.value = value
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, typeURL)
        w.writeBytesIfNotDefault(field: 2, value)
    }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        typeURL = ""
        value = []
        while let f = try r.nextField() {
            switch f.number {
            case 1: typeURL = try f.string(in: "google.protobuf.Any")
            case 2: value = Array(try f.bytes(in: "google.protobuf.Any"))
            default: break
            }
        }
    }
}

/// `google.protobuf.Timestamp`.
public struct ProtobufTimestamp: ProtobufMessage, Equatable, Comparable {
    public var seconds: Int64
    public var nanos: Int32

    public init(seconds: Int64, nanos: Int32) {
        self.seconds = seconds
        self.nanos = nanos
    }

    /// From nanoseconds since the Unix epoch.
    public init(unixNanoseconds ns: Int64) {
        seconds = ns / 1_000_000_000
        nanos = Int32(ns % 1_000_000_000)
        if nanos < 0 {
            seconds -= 1
            nanos += 1_000_000_000
        }
    }

    public var unixNanoseconds: Int64 { seconds &* 1_000_000_000 &+ Int64(nanos) }

    public func encode(into w: inout ProtobufWriter) {
        w.writeInt64IfNotDefault(field: 1, seconds)
        w.writeInt32IfNotDefault(field: 2, nanos)
    }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        seconds = 0
        nanos = 0
        while let f = try r.nextField() {
            switch f.number {
            case 1: seconds = try f.int64(in: "google.protobuf.Timestamp")
            case 2: nanos = try f.int32(in: "google.protobuf.Timestamp")
            default: break
            }
        }
    }

    public static func < (a: Self, b: Self) -> Bool { (a.seconds, a.nanos) < (b.seconds, b.nanos) }
}

/// gRPC status codes as ttrpc uses them.
public enum RPCStatusCode: Int32, Sendable {
    case ok = 0, cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists,
        permissionDenied, resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented,
        internalError, unavailable, dataLoss, unauthenticated
}

/// `google.rpc.Status`.
public struct RPCStatus: ProtobufMessage, Equatable {
    public var code: Int32
    public var message: String
    public var details: [ProtobufAny]

    public init(code: RPCStatusCode, message: String = "", details: [ProtobufAny] = []) {
        self.code = code.rawValue
        self.message = message
        self.details = details
    }

    public var statusCode: RPCStatusCode? { RPCStatusCode(rawValue: code) }

    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32IfNotDefault(field: 1, code)
        w.writeStringIfNotDefault(field: 2, message)
        for d in details { w.writeMessage(field: 3, d) }
    }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        code = 0
        message = ""
        details = []
        while let f = try r.nextField() {
            switch f.number {
            case 1: code = try f.int32(in: "google.rpc.Status")
            case 2: message = try f.string(in: "google.rpc.Status")
            case 3:
                var nested = try f.message(in: "google.rpc.Status")
                details.append(try ProtobufAny(decoding: &nested))
            default: break
            }
        }
    }
}

/// ttrpc `Request`.
public struct TTRPCRequest: ProtobufMessage, Equatable {
    public var service: String
    public var method: String
    public var payload: [UInt8]
    public var timeoutNanoseconds: Int64
    /// `KeyValue` pairs in order; keys may repeat.
    public var metadata: [(key: String, value: String)]

    public init(service: String, method: String, payload: [UInt8], timeoutNanoseconds: Int64 = 0,
                metadata: [(key: String, value: String)] = []) {
        self.service = service
        self.method = method
        self.payload = payload
        self.timeoutNanoseconds = timeoutNanoseconds
        self.metadata = metadata
    }

    /// The first value for `key`.
    public func metadataValue(_ key: String) -> String? { metadata.first { $0.key == key }?.value }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, service)
        w.writeStringIfNotDefault(field: 2, method)
        w.writeBytesIfNotDefault(field: 3, payload)
        w.writeInt64IfNotDefault(field: 4, timeoutNanoseconds)
        for kv in metadata {
            w.writeMessage(field: 5) { m in
                m.writeStringIfNotDefault(field: 1, kv.key)
                m.writeStringIfNotDefault(field: 2, kv.value)
            }
        }
    }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let name = "ttrpc.Request"
        service = ""
        method = ""
        payload = []
        timeoutNanoseconds = 0
        metadata = []
        while let f = try r.nextField() {
            switch f.number {
            case 1: service = try f.string(in: name)
            case 2: method = try f.string(in: name)
            case 3: payload = Array(try f.bytes(in: name))
            case 4: timeoutNanoseconds = try f.int64(in: name)
            case 5:
                var kv = try f.message(in: name)
                var key = "", value = ""
                while let g = try kv.nextField() {
                    switch g.number {
                    case 1: key = try g.string(in: "ttrpc.KeyValue")
                    case 2: value = try g.string(in: "ttrpc.KeyValue")
                    default: break
                    }
                }
                metadata.append((key, value))
            default: break
            }
        }
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.service == b.service && a.method == b.method && a.payload == b.payload
            && a.timeoutNanoseconds == b.timeoutNanoseconds
            && a.metadata.map(\.key) == b.metadata.map(\.key) && a.metadata.map(\.value) == b.metadata.map(\.value)
    }
}

/// ttrpc `Response`.
public struct TTRPCResponse: ProtobufMessage, Equatable {
    public var status: RPCStatus?
    public var payload: [UInt8]

    public init(status: RPCStatus? = nil, payload: [UInt8] = []) {
        self.status = status
        self.payload = payload
    }

    public func encode(into w: inout ProtobufWriter) {
        if let status { w.writeMessage(field: 1, status) }
        w.writeBytesIfNotDefault(field: 2, payload)
    }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        status = nil
        payload = []
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                var nested = try f.message(in: "ttrpc.Response")
                status = try RPCStatus(decoding: &nested)
            case 2: payload = Array(try f.bytes(in: "ttrpc.Response"))
            default: break
            }
        }
    }
}
