import NIOCore
import NIOHPACK
import Testing

@testable import ZPActivator

/// Byte-level tests of probe classification and of the probe answers.
@Suite struct ProbeClassifierTests {
    private func classify(_ text: String) -> ProbeClassification {
        ProbeClassifier.classify(ByteBuffer(string: text))
    }

    private func classify(_ bytes: [UInt8]) -> ProbeClassification {
        ProbeClassifier.classify(ByteBuffer(bytes: bytes))
    }

    @Test func kubeletHTTPProbe_isAProbe() {
        let request =
            "GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUser-Agent: kube-probe/1.31\r\n"
            + "Accept: */*\r\nConnection: close\r\n\r\n"
        #expect(classify(request) == .httpProbe)
        // Header names are case-insensitive; optional whitespace before the value.
        #expect(classify("HEAD / HTTP/1.0\r\nuser-AGENT:kube-probe/1.29\r\n\r\n") == .httpProbe)
    }

    @Test func httpRequest_withOtherOrMissingUserAgent_isNotAProbe() {
        #expect(classify("GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8.5\r\n\r\n") == .notAProbe)
        #expect(classify("GET / HTTP/1.1\r\nHost: x\r\n\r\n") == .notAProbe)
        #expect(classify("GET / HTTP/1.1\r\nUser-Agent: Mozilla kube-probe/1.2\r\n\r\n") == .notAProbe)
        // The prefix must be in the User-Agent header, not any header.
        #expect(classify("GET / HTTP/1.1\r\nX-Agent: kube-probe/1.2\r\n\r\n") == .notAProbe)
    }

    @Test func incompleteHTTPHead_needsMoreData_everyPrefix() {
        let request = "GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n"
        let bytes = Array(request.utf8)
        for length in 1..<bytes.count {
            #expect(classify(Array(bytes.prefix(length))) == .needMoreData, "prefix \(length)")
        }
        #expect(classify(bytes) == .httpProbe)
    }

    @Test func nonHTTPBytes_areRejectedAtOnce() {
        #expect(classify([0x16, 0x03, 0x01, 0x02, 0x00]) == .notAProbe)  // TLS ClientHello
        #expect(classify("*2\r\n$4\r\nPING\r\n") == .notAProbe)  // Redis
        #expect(classify("get / HTTP/1.1\r\n\r\n") == .notAProbe)  // lower-case method
        #expect(classify("ABCDEFGHIJKLMNOPQRSTUVWXYZ") == .notAProbe)  // too long for a method
        #expect(classify("GET / SMTP\r\n\r\n") == .notAProbe)
        #expect(classify(" GET") == .notAProbe)
    }

    private func grpcRequest(
        path: String,
        contentType: String = "application/grpc",
        splitHeaders: Bool = false
    ) throws -> [UInt8] {
        var out = ByteBuffer(bytes: ProbeClassifier.http2Preface)
        func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: ByteBuffer) {
            out.writeInteger(UInt8(payload.readableBytes >> 16))
            out.writeInteger(UInt16(truncatingIfNeeded: payload.readableBytes))
            out.writeInteger(type)
            out.writeInteger(flags)
            out.writeInteger(stream)
            out.writeImmutableBuffer(payload)
        }
        var settings = ByteBuffer()
        settings.writeInteger(UInt16(0x2))  // ENABLE_PUSH = 0
        settings.writeInteger(UInt32(0))
        frame(0x4, 0, 0, settings)
        var window = ByteBuffer()
        window.writeInteger(UInt32(983_041))
        frame(0x8, 0, 0, window)
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: true)
        var block = ByteBuffer()
        try encoder.encode(
            headers: HPACKHeaders([
                (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "10.1.2.3:9000"),
                ("content-type", contentType), ("user-agent", "grpc-go/1.65.0"), ("te", "trailers"),
            ]),
            to: &block
        )
        if splitHeaders {
            let first = block.readSlice(length: block.readableBytes / 2)!
            frame(0x1, 0x0, 1, first)
            frame(0x9, 0x4, 1, block)
        } else {
            frame(0x1, 0x4, 1, block)
        }
        frame(0x0, 0x1, 1, ByteBuffer(bytes: [0, 0, 0, 0, 0]))
        return Array(out.readableBytesView)
    }

    @Test func grpcHealthCheck_isAProbe_withOrWithoutContinuation() throws {
        let request = try grpcRequest(path: "/grpc.health.v1.Health/Check")
        #expect(classify(request) == .grpcHealthCheck(streamID: 1))
        let split = try grpcRequest(path: "/grpc.health.v1.Health/Check", splitHeaders: true)
        #expect(classify(split) == .grpcHealthCheck(streamID: 1))
        #expect(
            classify(try grpcRequest(path: "/grpc.health.v1.Health/Check", contentType: "application/grpc+proto"))
                == .grpcHealthCheck(streamID: 1)
        )
    }

    @Test func grpcPrefixes_needMoreData() throws {
        let request = try grpcRequest(path: "/grpc.health.v1.Health/Check")
        // Every cut before the end of the HEADERS frame (the DATA frame is the last 14 bytes).
        for length in 1..<(request.count - 14) {
            #expect(classify(Array(request.prefix(length))) == .needMoreData, "prefix \(length)")
        }
    }

    @Test func otherGRPCCalls_andPlainHTTP2_areNotProbes() throws {
        #expect(classify(try grpcRequest(path: "/grpc.health.v1.Health/Watch")) == .notAProbe)
        #expect(classify(try grpcRequest(path: "/shop.v1.Cart/Add")) == .notAProbe)
        #expect(classify(try grpcRequest(path: "/grpc.health.v1.Health/Check", contentType: "text/html")) == .notAProbe)
    }

    @Test func httpNoContent_isAComplete204() {
        #expect(ProbeResponses.httpNoContent.hasPrefix("HTTP/1.1 204 No Content\r\n"))
        #expect(ProbeResponses.httpNoContent.hasSuffix("\r\n\r\n"))
    }

    @Test func grpcServingResponse_framesDecode() throws {
        var buffer = try ProbeResponses.grpcServing(streamID: 3, allocator: ByteBufferAllocator())
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        var frames: [(type: UInt8, flags: UInt8, stream: UInt32, payload: ByteBuffer)] = []
        while buffer.readableBytes > 0 {
            let header = buffer.readBytes(length: 9) ?? []
            try #require(header.count == 9)
            let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
            let stream = UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8])
            let (type, flags) = (header[3], header[4])
            let sliced = buffer.readSlice(length: length)
            let payload = try #require(sliced)
            frames.append((type, flags, stream, payload))
        }
        // The server's SETTINGS went out when the preface arrived (HTTP2ServerPreface); the answer
        // acknowledges the client's SETTINGS.
        #expect(frames.map(\.type) == [0x4, 0x1, 0x0, 0x1, 0x7])
        #expect(frames[0].flags == 0x1 && frames[0].payload.readableBytes == 0)  // SETTINGS ACK
        var headers = frames[1].payload
        let responseHeaders = try decoder.decodeHeaders(from: &headers)
        #expect(responseHeaders.first(name: ":status") == "200")
        #expect(responseHeaders.first(name: "content-type") == "application/grpc")
        #expect(frames[1].stream == 3 && frames[2].stream == 3 && frames[3].stream == 3)
        #expect(Array(frames[2].payload.readableBytesView) == [0, 0, 0, 0, 2, 0x08, 0x01])
        var trailers = frames[3].payload
        #expect(try decoder.decodeHeaders(from: &trailers).first(name: "grpc-status") == "0")
        #expect(frames[3].flags == 0x5)  // END_HEADERS | END_STREAM
    }

    /// Random and mutated inputs: the classifier never traps, and random bytes are never a probe.
    @Test func randomAndMutatedInputs_neverTrap() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        let seeds = [
            Array("GET / HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n".utf8),
            try grpcRequest(path: "/grpc.health.v1.Health/Check"),
        ]
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }
                // Unless it may look like a method or the preface, random bytes are never a probe.
                if bytes.first.map({ $0 >= 65 && $0 <= 90 }) != true && !bytes.starts(with: [0x50, 0x52]) {
                    let verdict = classify(bytes)
                    #expect(verdict != .httpProbe && verdict != .grpcHealthCheck(streamID: 1), "\(bytes)")
                }
            } else {
                bytes = seeds[Int(next() % 2)]
                for _ in 0..<(1 + Int(next() % 4)) where !bytes.isEmpty {
                    bytes[Int(next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: next())
                }
                bytes = Array(bytes.prefix(Int(next() % UInt64(bytes.count + 1))))
                _ = classify(bytes)
            }
            // Every input: a final verdict never changes when more bytes arrive (the activator
            // acts on the first final verdict of a growing buffer).
            let whole = classify(bytes)
            let cut = bytes.isEmpty ? 0 : Int(next() % UInt64(bytes.count + 1))
            let prefix = classify(Array(bytes.prefix(cut)))
            if prefix != .needMoreData {
                #expect(prefix == whole, "verdict after \(cut) of \(bytes.count) bytes: \(bytes)")
            }
            if cut == 0 { #expect(prefix == .needMoreData, "an empty read is never a verdict") }
        }
    }
}
