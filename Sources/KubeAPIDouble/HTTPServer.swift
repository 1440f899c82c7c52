import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ZPKube

/// One HTTP/1.1 connection of the double: collects a request, authenticates it, hands it to the
/// API logic and writes the answer, or streams a watch (chunked, one JSON event per line).
final class APIConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: APIServer
    private let tls: Bool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var watch: ActiveWatch?

    private struct ActiveWatch {
        var id: Int?
        var watcher: Watcher
        var setup: WatchSetup
        var timeout: Scheduled<Void>?
        var bookmark: Scheduled<Void>?
        var sentColumns = false
        var keepAlive: Bool
    }

    static let maximumBodyBytes = 3 << 20

    init(api: APIServer, tls: Bool) {
        self.api = api
        self.tls = tls
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            tooLarge = false
        case .body(var buffer):
            if body.count + buffer.readableBytes > APIConnectionHandler.maximumBodyBytes {
                tooLarge = true
            } else {
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            let request = makeRequest(context: context, head: requestHead)
            let keepAlive = requestHead.isKeepAlive
            if tooLarge {
                write(
                    context: context,
                    reply: api.errorReply(
                        StatusError(code: 413, reason: "RequestEntityTooLarge", message: "request is too large")
                    ),
                    keepAlive: keepAlive
                )
                return
            }
            let delay = api.settings.withLock { $0.responseDelay }
            let reply = api.handle(request)
            if delay > .zero {
                let loop = context.eventLoop.assumeIsolated()
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                loop.scheduleTask(in: TimeAmount(delay)) {
                    self.dispatch(context: bound.value, reply: reply, keepAlive: keepAlive)
                }
            } else {
                dispatch(context: context, reply: reply, keepAlive: keepAlive)
            }
        }
    }

    private func makeRequest(context: ChannelHandlerContext, head: HTTPRequestHead) -> APIRequest {
        let uri = head.uri
        let pathPart = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = percentDecode(String(pathPart[0]))
        let rawQuery = pathPart.count > 1 ? String(pathPart[1]) : ""
        var query: [String: String] = [:]
        for item in rawQuery.split(separator: "&") {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = percentDecode(String(pair[0]).replacing("+", with: " "))
            query[key] = pair.count > 1 ? percentDecode(String(pair[1]).replacing("+", with: " ")) : ""
        }
        var user: String?
        var bad = false
        if let authorization = head.headers.first(name: "Authorization") {
            if authorization.hasPrefix("Bearer "),
                let name = api.settings.withLock({ $0.tokens[String(authorization.dropFirst(7))] })
            {
                user = name
            } else {
                bad = true
            }
        } else if tls, let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let certificate = handler.peerCertificate, let der = try? certificate.toDERBytes()
        {
            // NIOSSL verified it against the CA (optional verification): the subject's CN is the user.
            user = TestCertificateAuthority.commonName(derBytes: der)
        }
        return APIRequest(
            method: head.method.rawValue,
            path: path,
            rawQuery: rawQuery,
            query: query,
            contentType: head.headers.first(name: "Content-Type") ?? "",
            accept: head.headers.first(name: "Accept") ?? "",
            body: body,
            user: user,
            badCredentials: bad
        )
    }

    private func percentDecode(_ text: String) -> String {
        text.removingPercentEncoding ?? text
    }

    private func dispatch(context: ChannelHandlerContext, reply: APIReply, keepAlive: Bool) {
        switch reply {
        case .response:
            write(context: context, reply: reply, keepAlive: keepAlive)
        case .watch(let setup):
            startWatch(context: context, setup: setup, keepAlive: keepAlive)
        }
    }

    private func write(context: ChannelHandlerContext, reply: APIReply, keepAlive: Bool) {
        guard case .response(let status, let headerList, let bytes) = reply else { return }
        var headers = HTTPHeaders(headerList)
        headers.replaceOrAdd(name: "Content-Length", value: String(bytes.count))
        headers.replaceOrAdd(name: "Audit-Id", value: UUID().uuidString.lowercased())
        headers.replaceOrAdd(name: "Cache-Control", value: "no-cache, private")
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    // MARK: - watch streaming

    private func startWatch(context: ChannelHandlerContext, setup: WatchSetup, keepAlive: Bool) {
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let boundContext = NIOLoopBound(context, eventLoop: loop)
        let watcher = Watcher(resource: setup.resource, filter: setup.filter) {
            loop.execute { bound.value.flush(context: boundContext.value) }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        headers.add(name: "Audit-Id", value: UUID().uuidString.lowercased())
        headers.add(name: "Cache-Control", value: "no-cache, private")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        var active = ActiveWatch(id: nil, watcher: watcher, setup: setup, keepAlive: keepAlive)
        watch = active
        do {
            active.id = try api.store.openWatch(
                setup.resource,
                filter: setup.filter,
                from: setup.resourceVersion,
                watcher: watcher
            )
        } catch {
            // Too old: the real server answers 200 and an ERROR event carrying the 410 Status.
            writeLine(context: context, ["type": "ERROR", "object": error.body])
            finishWatch(context: context)
            return
        }
        let isolated = loop.assumeIsolated()
        active.timeout = isolated.scheduleTask(in: TimeAmount(setup.timeout)) {
            bound.value.finishWatch(context: boundContext.value)
        }
        watch = active
        if setup.bookmarks { scheduleBookmark(context: context) }
        context.flush()
    }

    private func scheduleBookmark(context: ChannelHandlerContext) {
        guard var active = watch else { return }
        let interval = api.settings.withLock { $0.bookmarkInterval }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        active.bookmark = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(interval)) {
            bound.value.sendBookmark(context: boundContext.value)
        }
        watch = active
    }

    private func sendBookmark(context: ChannelHandlerContext) {
        guard let active = watch else { return }
        defer { scheduleBookmark(context: context) }
        let object: JSON = [
            "kind": .string(active.setup.resource.kind), "apiVersion": .string(active.setup.resource.apiVersion),
            "metadata": ["resourceVersion": .string(String(api.store.revision)), "creationTimestamp": .null],
        ]
        writeLine(context: context, ["type": "BOOKMARK", "object": object])
        context.flush()
    }

    private func flush(context: ChannelHandlerContext) {
        guard var active = watch else { return }
        for frame in active.watcher.drain() {
            switch frame {
            case .event(let type, let object):
                var payload = api.withKind(object, active.setup.resource)
                if active.setup.table {
                    payload = Tables.table(
                        active.setup.resource,
                        [object],
                        resourceVersion: object[path: ["metadata", "resourceVersion"]]?.stringValue,
                        includeObject: active.setup.includeObject,
                        withColumns: !active.sentColumns
                    )
                    active.sentColumns = true
                    watch = active
                }
                writeLine(context: context, ["type": .string(type), "object": payload])
            case .end:
                finishWatch(context: context)
                return
            }
        }
        context.flush()
    }

    private func writeLine(context: ChannelHandlerContext, _ event: JSON) {
        var bytes = Array(event.serialized())
        bytes.append(UInt8(ascii: "\n"))
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
    }

    private func finishWatch(context: ChannelHandlerContext) {
        guard let active = watch else { return }
        watch = nil
        cleanUp(active)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !active.keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func cleanUp(_ active: ActiveWatch) {
        active.timeout?.cancel()
        active.bookmark?.cancel()
        if let id = active.id { api.store.closeWatch(id) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let active = watch {
            watch = nil
            cleanUp(active)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
