#!/usr/bin/env python3
"""Probes a pod the way kubelet does, again and again, for the CRI test bed (decision 0040).

    kubelet-prober.py TARGET_HOST TARGET_PORT [options]

  --http PATH          an HTTP GET (HTTP/1.1, Connection: close) with --user-agent
  --tcp                a TCP probe: connect, close
  --grpc               a gRPC health check with grpcio (gRPC C-core), like kubelet's grpc-go prober
  --user-agent UA      default kube-probe/1.36
  --family 4|6|mapped  socket family: IPv4 (AF_INET), IPv6, or IPv4-mapped addresses on AF_INET6
                       sockets (as some Go builds and dual-stack nodes do); default 4
  --interval SECONDS   between rounds, default 1
  --timeout SECONDS    per probe, default 2
  --cgroup DIR         move this process into the cgroup DIR first (writes cgroup.procs)
  --count N            stop after N probes of each kind (default: run until stopped)
  --hold SECONDS       TCP probes keep the connection open this long (a kubelet connection that
                       a test can look at) and print "tcp connected <local address> <port>" first

Like kubelet, which runs every probe of a container on its own timer, each kind of probe runs in
its own thread: a slow one (a gRPC probe waiting for a channel that never gets ready) does not
delay the others. Each probe prints one line: "<unix time> <kind> <result>", result = the HTTP
status, "ok", the health status (SERVING, ...) or "error <reason>". Runs until SIGTERM or SIGINT.

The test bed copies this file under the name of the process it plays (kubelet, k3s, an ingress
proxy): the kernel names a script's process after the file, which is how zeropod recognises
kubelet's connections (the name of the thread group leader, read when the connection is opened).
"""
import argparse
import os
import signal
import socket
import sys
import threading
import time

OUTPUT = threading.Lock()


def connect(host, port, family, timeout):
    if family == "4":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host, port)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        address = ("::ffff:" + host if family == "mapped" else host, port, 0, 0)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def http_probe(args):
    sock = connect(args.host, args.port, args.family, args.timeout)
    try:
        host = "[%s]" % args.host if ":" in args.host else args.host
        request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                   % (args.http, host, args.port, args.user_agent))
        sock.sendall(request.encode())
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    fields = answer.split(b"\r\n", 1)[0].split(b" ")
    if len(fields) < 2 or not fields[1].isdigit():
        return "error no status line in %d bytes" % len(answer)
    return fields[1].decode()


def tcp_probe(args):
    sock = connect(args.host, args.port, args.family, args.timeout)
    if args.hold:
        local = sock.getsockname()
        with OUTPUT:
            print("%.3f tcp connected %s %d" % (time.time(), local[0], local[1]), flush=True)
        time.sleep(args.hold)
    sock.close()
    return "ok"


def grpc_probe(args):
    import grpc  # only this probe needs grpcio

    host = args.host
    if args.family == "mapped":
        host = "::ffff:" + host
    target = ("ipv6:[%s]:%d" % (host, args.port)) if ":" in host else ("ipv4:%s:%d" % (host, args.port))
    options = [("grpc.primary_user_agent", args.user_agent), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            return "error channel not ready"
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            response = call(b"", timeout=args.timeout)
        except grpc.RpcError as error:
            return "error %s" % error.code().name
    status = response[1] if len(response) >= 2 and response[0] == 0x08 else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))


def main():
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--http")
    parser.add_argument("--tcp", action="store_true")
    parser.add_argument("--grpc", action="store_true")
    parser.add_argument("--user-agent", default="kube-probe/1.36")
    parser.add_argument("--family", choices=["4", "6", "mapped"], default="4")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--cgroup")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--hold", type=float, default=0)
    args = parser.parse_args()
    if args.cgroup:
        with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    probes = []
    if args.http:
        probes.append(("http", http_probe))
    if args.tcp:
        probes.append(("tcp", tcp_probe))
    if args.grpc:
        probes.append(("grpc", grpc_probe))
    print("%.3f start pid %d" % (time.time(), os.getpid()), flush=True)

    def worker(kind, probe):
        made = 0
        while args.count == 0 or made < args.count:
            made += 1
            started = time.time()
            try:
                result = probe(args)
            except Exception as error:  # a failed probe is a result, not the end
                result = "error %s" % (error.__class__.__name__,)
            with OUTPUT:
                print("%.3f %s %s" % (started, kind, result), flush=True)
            time.sleep(max(0.0, started + args.interval - time.time()))

    threads = [threading.Thread(target=worker, args=(kind, probe), daemon=True) for kind, probe in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(3600)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
