#!/usr/bin/env python3
"""Kubelet's gRPC probe with a real gRPC client library (grpcio, gRPC C-core), for the CRI test bed.

    grpc-probe.py check HOST:PORT SERVICE USER_AGENT TIMEOUT   prints SERVING, NOT_SERVING, ...
                                                               or "ERROR <code> <details>" (exit 2)
    grpc-probe.py call HOST:PORT METHOD TEXT TIMEOUT           calls METHOD (e.g. /zp.test.Echo/Say)
                                                               with TEXT as the raw request bytes,
                                                               prints the answer or "ERROR ..." (exit 2)
    grpc-probe.py serve PORT                                   a grpc.health.v1 server on 127.0.0.1
                                                               that answers SERVING to kube-probe/*
                                                               user agents, NOT_SERVING to others,
                                                               and /zp.test.Echo/Say, which answers
                                                               its request bytes

Like kubelet's prober (grpc-go, WithBlock), the check waits until the channel is ready, which
C-core reaches only after the server's SETTINGS, then calls grpc.health.v1.Health/Check. The
messages are encoded by hand (HealthCheckRequest: 1 service; HealthCheckResponse: 1 status), so
grpcio is the only dependency (scripts/setup.sh installs it into a venv under the cache).
"""
import sys
from concurrent import futures

import grpc

STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def check(target, service, agent, timeout):
    options = [("grpc.primary_user_agent", agent), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            print("ERROR DEADLINE_EXCEEDED channel not ready within %ss" % timeout)
            return 2
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        name = service.encode()
        request = (b"\x0a" + bytes([len(name)]) + name) if name else b""
        try:
            response = call(request, timeout=timeout)
        except grpc.RpcError as error:
            print("ERROR %s %s" % (error.code().name, error.details()))
            return 2
        status = response[1] if len(response) >= 2 and response[0] == 0x08 else 0
        print(STATUS.get(status, str(status)))
        return 0


def call(target, method, text, timeout):
    with grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)]) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            answer = channel.unary_unary(method)(text.encode(), timeout=timeout)
        except grpc.FutureTimeoutError:
            print("ERROR DEADLINE_EXCEEDED channel not ready within %ss" % timeout)
            return 2
        except grpc.RpcError as error:
            print("ERROR %s %s" % (error.code().name, error.details()))
            return 2
        print(answer.decode())
        return 0


def serve(port):
    def health(request, context):
        agent = dict(context.invocation_metadata()).get("user-agent", "")
        return b"\x08\x01" if agent.startswith("kube-probe/") else b"\x08\x02"

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)})
    echo = grpc.method_handlers_generic_handler(
        "zp.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler, echo))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
    if len(sys.argv) == 6 and sys.argv[1] == "call":
        sys.exit(call(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    print(__doc__, file=sys.stderr)
    sys.exit(64)
