// ttrpc's request/response envelopes (containerd/ttrpc request.proto, proto3) and the well-known
// types they carry (google.rpc.Status, google.protobuf.Any, google.protobuf.Timestamp).

/// `google.protobuf.Any`: a type URL and the encoded message.
public struct ProtobufAny: ProtobufMessage, Equatable {
    /// Names the type of `value`, e.g. `type.googleapis.com/google.protobuf.StringValue`.
    public var typeURL: String
    /// The encoded message.
    public var value: [UInt8]

    /// An `Any` holding `value` of type `typeURL`.
    public init(typeURL: String, value: [UInt8]) {
        self.typeURL = typeURL
        self.value = value
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, typeURL)
        w.writeBytesIfNotDefault(field: 2, value)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input or a field of the wrong wire type.
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
    /// Seconds since the Unix epoch.
    public var seconds: Int64
    /// Nanoseconds within the second, 0 ... 999 999 999.
    public var nanos: Int32

    /// A timestamp from its two fields.
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

    /// Nanoseconds since the Unix epoch.
    public var unixNanoseconds: Int64 { seconds &* 1_000_000_000 &+ Int64(nanos) }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt64IfNotDefault(field: 1, seconds)
        w.writeInt32IfNotDefault(field: 2, nanos)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input or a field of the wrong wire type.
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

    /// Earlier first.
    public static func < (a: Self, b: Self) -> Bool { (a.seconds, a.nanos) < (b.seconds, b.nanos) }
}

/// gRPC status codes as ttrpc uses them.
public enum RPCStatusCode: Int32, Sendable {
    case ok = 0
    case cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists,
        permissionDenied, resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented,
        internalError, unavailable, dataLoss, unauthenticated
}

/// `google.rpc.Status`.
public struct RPCStatus: ProtobufMessage, Equatable {
    /// The raw status code (see `statusCode`).
    public var code: Int32
    /// A message for developers.
    public var message: String
    /// Extra error details.
    public var details: [ProtobufAny]

    /// A status with a known code.
    public init(code: RPCStatusCode, message: String = "", details: [ProtobufAny] = []) {
        self.code = code.rawValue
        self.message = message
        self.details = details
    }

    /// The code, or nil when it is not a known gRPC code.
    public var statusCode: RPCStatusCode? { RPCStatusCode(rawValue: code) }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32IfNotDefault(field: 1, code)
        w.writeStringIfNotDefault(field: 2, message)
        for d in details { w.writeMessage(field: 3, d) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input or a field of the wrong wire type.
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
    /// The fully qualified service name, e.g. `containerd.task.v2.Task`.
    public var service: String
    /// The method name, e.g. `Create`.
    public var method: String
    /// The encoded request or response message.
    public var payload: [UInt8]
    /// The caller's deadline in nanoseconds; 0 for none.
    public var timeoutNanoseconds: Int64
    /// `KeyValue` pairs in order; keys may repeat.
    public var metadata: [(key: String, value: String)]

    /// A request for `service`/`method` carrying the encoded request message.
    public init(
        service: String,
        method: String,
        payload: [UInt8],
        timeoutNanoseconds: Int64 = 0,
        metadata: [(key: String, value: String)] = []
    ) {
        self.service = service
        self.method = method
        self.payload = payload
        self.timeoutNanoseconds = timeoutNanoseconds
        self.metadata = metadata
    }

    /// The first value for `key`.
    public func metadataValue(_ key: String) -> String? { metadata.first { $0.key == key }?.value }

    /// Writes the fields in field-number order, proto3 defaults omitted.
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

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input or a field of the wrong wire type.
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
                var key = ""
                var value = ""
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

    /// Field-by-field equality (metadata order matters).
    public static func == (a: Self, b: Self) -> Bool {
        a.service == b.service && a.method == b.method && a.payload == b.payload
            && a.timeoutNanoseconds == b.timeoutNanoseconds
            && a.metadata.map(\.key) == b.metadata.map(\.key) && a.metadata.map(\.value) == b.metadata.map(\.value)
    }
}

/// ttrpc `Response`.
public struct TTRPCResponse: ProtobufMessage, Equatable {
    /// The error status; nil or code 0 on success.
    public var status: RPCStatus?
    /// The encoded request or response message.
    public var payload: [UInt8]

    /// A response with a status and/or a payload.
    public init(status: RPCStatus? = nil, payload: [UInt8] = []) {
        self.status = status
        self.payload = payload
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        if let status { w.writeMessage(field: 1, status) }
        w.writeBytesIfNotDefault(field: 2, payload)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input or a field of the wrong wire type.
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
