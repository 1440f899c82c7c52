// pooled-app: a small server that keeps ONE pooled TCP connection to a peer, the way a web app
// holds a database connection, for the end-to-end tests of connections across a scale-down
// (docs/decisions/0045-connections-across-scale-down.md). Built statically by the tests
// (gcc -static) and run in a busybox root filesystem.
//
//   pooled-app tcp   PEER_ADDR PEER_PORT LISTEN_PORT   peer speaks lines: "q\n" -> "conn=<id> n=<k>\n"
//                                                       (unsolicited "ping\n" lines are skipped)
//   pooled-app mysql PEER_ADDR PEER_PORT LISTEN_PORT   peer is MariaDB; logs in as the password-less
//                                                       user "bench"; asks SELECT CONNECTION_ID()
//
// Every HTTP request on LISTEN_PORT (any request; the head is read up to its blank line) makes one
// round trip on the pooled connection and is answered with
//   client=<the client's address> peer=<the peer's answer> reconnects=<n>
// When the pooled connection fails, the answer says peer-error=<what> and the app reconnects for
// the next request (so a test sees a new connection id and reconnects=1).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int mysql_mode;
static const char *peer_addr, *peer_port;
static int pooled = -1;
static int reconnects;
static unsigned char rbuf[65536];
static size_t rlen;

static int read_more(int fd) {
    if (rlen == sizeof(rbuf)) return -1;
    ssize_t n = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
    if (n <= 0) return n == 0 ? -2 : -1;
    rlen += (size_t)n;
    return 0;
}

static void consume(size_t n) {
    memmove(rbuf, rbuf + n, rlen - n);
    rlen -= n;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
        c += w; n -= (size_t)w;
    }
    return 0;
}

// One MySQL packet into out (payload), returns its length or -1.
static int mysql_packet(unsigned char *out, size_t cap, unsigned char *seq) {
    while (rlen < 4) if (read_more(pooled) < 0) return -1;
    size_t len = rbuf[0] | rbuf[1] << 8 | rbuf[2] << 16;
    while (rlen < 4 + len) if (read_more(pooled) < 0) return -1;
    if (len > cap) return -1;
    *seq = rbuf[3];
    memcpy(out, rbuf + 4, len);
    consume(4 + len);
    return (int)len;
}

static int mysql_send(unsigned char seq, const unsigned char *p, size_t n) {
    unsigned char h[4] = {n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, seq};
    if (write_all(pooled, h, 4) < 0) return -1;
    return write_all(pooled, p, n);
}

static int mysql_login(void) {
    unsigned char p[4096], seq;
    int n = mysql_packet(p, sizeof(p), &seq);
    if (n < 1 || p[0] != 10) return -1;
    unsigned char resp[128];
    size_t k = 0;
    unsigned int caps = 0x0001 | 0x0200 | 0x8000; // LONG_PASSWORD | PROTOCOL_41 | SECURE_CONNECTION
    memcpy(resp + k, &caps, 4); k += 4;
    unsigned int maxp = 1u << 24;
    memcpy(resp + k, &maxp, 4); k += 4;
    resp[k++] = 45;
    memset(resp + k, 0, 23); k += 23;
    memcpy(resp + k, "bench", 6); k += 6;
    resp[k++] = 0; // empty auth response
    if (mysql_send(seq + 1, resp, k) < 0) return -1;
    n = mysql_packet(p, sizeof(p), &seq);
    if (n >= 1 && p[0] == 0xfe) { // auth switch: empty password
        if (mysql_send(seq + 1, (unsigned char *)"", 0) < 0) return -1;
        n = mysql_packet(p, sizeof(p), &seq);
    }
    return (n >= 1 && p[0] == 0) ? 0 : -1;
}

static int connect_peer(void) {
    // Numeric addresses only (a static binary has no resolver).
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, peer_addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)atoi(peer_port));
        sl = sizeof(*v4);
    } else if (inet_pton(AF_INET6, peer_addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)atoi(peer_port));
        sl = sizeof(*v6);
    } else {
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    pooled = fd;
    rlen = 0;
    if (mysql_mode && mysql_login() < 0) {
        close(pooled);
        pooled = -1;
        return -1;
    }
    return 0;
}

// One round trip on the pooled connection; the answer goes to out.
static int ask_peer(char *out, size_t cap) {
    if (!mysql_mode) {
        if (write_all(pooled, "q\n", 2) < 0) { snprintf(out, cap, "peer-error=write:%s", strerror(errno)); return -1; }
        for (;;) {
            unsigned char *nl = memchr(rbuf, '\n', rlen);
            if (nl && nl - rbuf == 4 && memcmp(rbuf, "ping", 4) == 0) { // unsolicited: skipped
                consume(5);
                continue;
            }
            if (nl) {
                size_t n = (size_t)(nl - rbuf);
                snprintf(out, cap, "%.*s", (int)n, rbuf);
                consume(n + 1);
                return 0;
            }
            int r = read_more(pooled);
            if (r < 0) { snprintf(out, cap, "peer-error=%s", r == -2 ? "eof" : strerror(errno)); return -1; }
        }
    }
    static const char q[] = "SELECT CONNECTION_ID()";
    unsigned char cmd[64];
    cmd[0] = 0x03;
    memcpy(cmd + 1, q, sizeof(q) - 1);
    if (mysql_send(0, cmd, sizeof(q)) < 0) { snprintf(out, cap, "peer-error=write:%s", strerror(errno)); return -1; }
    unsigned char p[4096], seq;
    int n = mysql_packet(p, sizeof(p), &seq); // column count (or error)
    if (n < 1) { snprintf(out, cap, "peer-error=%s", errno ? strerror(errno) : "eof"); return -1; }
    if (p[0] == 0xff) { snprintf(out, cap, "peer-error=mysql:%.*s", n > 9 ? n - 9 : 0, p + 9); return -1; }
    if (mysql_packet(p, sizeof(p), &seq) < 0) goto broken;      // column definition
    if (mysql_packet(p, sizeof(p), &seq) < 0) goto broken;      // EOF
    n = mysql_packet(p, sizeof(p), &seq);                        // the row: one length-encoded string
    if (n < 2 || p[0] >= 0xfb || p[0] + 1 > n) goto broken;
    snprintf(out, cap, "mysql-connection-id=%.*s", p[0], p + 1);
    if (mysql_packet(p, sizeof(p), &seq) < 0) goto broken;      // EOF
    return 0;
broken:
    snprintf(out, cap, "peer-error=result");
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s tcp|mysql PEER_ADDR PEER_PORT LISTEN_PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    mysql_mode = strcmp(argv[1], "mysql") == 0;
    peer_addr = argv[2];
    peer_port = argv[3];
    for (int i = 0; connect_peer() < 0; i++) {
        if (i == 300) { fprintf(stderr, "pooled-app: peer %s:%s unreachable\n", peer_addr, peer_port); return 1; }
        usleep(100000);
    }
    int srv = socket(AF_INET6, SOCK_STREAM, 0), zero = 0, one = 1;
    setsockopt(srv, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((unsigned short)atoi(argv[4]));
    if (bind(srv, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(srv, 64) < 0) { perror("listen"); return 1; }
    printf("pooled-app: serving on %s, pooled connection to %s:%s\n", argv[4], peer_addr, peer_port);
    for (;;) {
        struct sockaddr_in6 from;
        socklen_t fl = sizeof(from);
        int c = accept(srv, (struct sockaddr *)&from, &fl);
        if (c < 0) continue;
        struct timeval tv = {10, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char req[2048];
        size_t got = 0;
        while (got < sizeof(req) - 1) {
            ssize_t n = read(c, req + got, sizeof(req) - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
        }
        char client[INET6_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET6, &from.sin6_addr, client, sizeof(client));
        const char *shown = strncmp(client, "::ffff:", 7) == 0 ? client + 7 : client;
        char answer[512];
        if (pooled < 0) {
            if (connect_peer() == 0) reconnects++;
        }
        if (pooled < 0) {
            snprintf(answer, sizeof(answer), "peer-error=unreachable");
        } else if (ask_peer(answer, sizeof(answer)) < 0) {
            close(pooled);
            pooled = -1;
        }
        char body[1024], out[1200];
        int bl = snprintf(body, sizeof(body), "client=%s peer=%s reconnects=%d\n", shown, answer, reconnects);
        int ol = snprintf(out, sizeof(out), "HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", bl, body);
        write_all(c, out, (size_t)ol);
        printf("request from %s: %s", shown, body);
        close(c);
    }
}
