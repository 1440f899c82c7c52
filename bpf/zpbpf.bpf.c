// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// zeropod-swift eBPF programs, one object per pod network namespace (the node-wide sockops program
// is the other object, zpbpf_node.bpf.c; the maps both use are in zpbpf_shared.h).
//
//   zp_sk_lookup    sk_lookup, attached to the pod netns: while the redirect is on for a TCP port,
//                   new connections to that port are assigned to the activator's listening socket
//                   (SOCKHASH zp_listeners, keyed by port). No packet is rewritten; established
//                   connections never reach sk_lookup, so they survive a switch.
//   zp_tc_ingress   tc ingress (one tcx link) on every interface of the pod netns: the hold below,
//                   then the activity stamp: the monotonic time (bpf_ktime_get_ns) of the last
//                   client segment that carries data,
//                   SYN or FIN for a tracked port, unless the source is a probe source, (per node
//                   setting) a loopback address, or the connection is kubelet's (the node's
//                   zp_kubelet_conns, reached through zp_node_kubelet_conns; decision 0040).
//
// The open connections per port (zp_activity's `open`) are counted by the node object's sockops
// program, which finds this pod's zp_activity, zp_probe_src and zp_config by the pod's netns cookie
// (decision 0052: one sockops program per node, not one per pod, so a node is not limited to the
// 64 programs a cgroup takes).
//
// Connections across a scale-down (decisions 0045, 0046; the section at the end of this file):
//   zp_tc_ingress   (above, first) drops the segments of the TCP connections a checkpoint dumped (zp_held, by 4-tuple) until the restore has put
//                   their sockets back, so the peers see no reset; a segment with data or FIN wakes
//                   the owner (ringbuf zp_events).
//   zp_sk_lookup    (above) gives a new connection of a port with a handover listener (zp_handover)
//                   to that listener (zp_handover_socks; the regular lookup when it is bound to one
//                   address), whose SO_REUSEPORT group the restored application's own listener
//                   joins; probe sources and kubelet's connections still go to the activator.
//   zp_reuseport_migrate  sk_reuseport/migrate on the handover listener's group: when the listener
//                   closes, its queued connections move to the application's listener.
//
// Build: clang -target bpf -O2 -g, then llvm-strip -g (keeps BTF); see scripts/bpf-embed.sh.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "zpbpf_shared.h"

// Every interface of a pod netns (lo, veth) has an Ethernet header at tc ingress; interfaces
// without one (L3 tunnels) are not expected in a pod and would be parsed wrongly.

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} zp_redirect_on SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, ZP_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u64);
} zp_listeners SEC(".maps");

ZP_ACTIVITY_MAP zp_activity SEC(".maps");
ZP_PROBE_SRC_MAP zp_probe_src SEC(".maps");
ZP_CONFIG_MAP zp_config SEC(".maps");

/// The node's zp_kubelet_conns at index 0, put there by user space when the pod registers with the
/// node object; empty (no kubelet filter) until then.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 1);
    __type(key, __u32);
    __array(values, ZP_KUBELET_CONNS_MAP);
} zp_node_kubelet_conns SEC(".maps");

static __always_inline struct zp_config *config(void) {
    __u32 zero = 0;
    return bpf_map_lookup_elem(&zp_config, &zero);
}

static __always_inline void *kubelet_conns(void) {
    __u32 zero = 0;
    return bpf_map_lookup_elem(&zp_node_kubelet_conns, &zero);
}

static __always_inline int zp_handover_takes(struct bpf_sk_lookup *ctx, __u32 port);
static __always_inline void zp_handover_assign(struct bpf_sk_lookup *ctx, __u32 port);

SEC("sk_lookup")
int zp_sk_lookup(struct bpf_sk_lookup *ctx) {
    if (ctx->protocol != IPPROTO_TCP)
        return SK_PASS;
    __u32 port = ctx->local_port;
    __u32 *on = bpf_map_lookup_elem(&zp_redirect_on, &port);
    if (!on || *on == 0)
        return SK_PASS;
    if (zp_handover_takes(ctx, port)) {
        zp_handover_assign(ctx, port);
        return SK_PASS;
    }
    struct bpf_sock *sk = bpf_map_lookup_elem(&zp_listeners, &port);
    if (!sk)
        return SK_PASS;
    // An IPv4-only activator socket cannot take IPv6 connections (-EAFNOSUPPORT): the regular
    // lookup then runs, as if the redirect were off for that family.
    bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    return SK_PASS;
}

/// One TCP segment at tc ingress, parsed once for the hold and the activity stamp.
struct zp_segment {
    struct zp_addr source;      // the peer (the client of a connection to the pod)
    struct zp_addr destination; // the pod side
    __u16 source_port;          // host order
    __u16 destination_port;     // host order
    __u32 payload;              // bytes of TCP payload
    __u32 syn;
    __u32 fin;
};

/// Parses the IPv4 or IPv6 TCP segment of `skb` (Ethernet framing); 0 if it is not one.
static __always_inline int zp_parse_segment(struct __sk_buff *skb, struct zp_segment *seg) {
    __builtin_memset(seg, 0, sizeof(*seg));
    __u32 l4_off, l4_end;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return 0;
        if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
            return 0;
        addr_from_v4(&seg->source, ip.saddr);
        addr_from_v4(&seg->destination, ip.daddr);
        l4_off = ETH_HLEN + ip.ihl * 4;
        // tot_len is 0 in BIG TCP (GSO over 64 KiB) packets: fall back to the skb length.
        l4_end = ip.tot_len ? ETH_HLEN + bpf_ntohs(ip.tot_len) : skb->len;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return 0;
        if (ip6.nexthdr != IPPROTO_TCP) // extension headers are not followed
            return 0;
        __builtin_memcpy(seg->source.bytes, &ip6.saddr, 16);
        __builtin_memcpy(seg->destination.bytes, &ip6.daddr, 16);
        l4_off = ETH_HLEN + sizeof(ip6);
        l4_end = ip6.payload_len ? l4_off + bpf_ntohs(ip6.payload_len) : skb->len;
    } else {
        return 0;
    }
    struct tcphdr tcp;
    if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) < 0)
        return 0;
    seg->source_port = bpf_ntohs(tcp.source);
    seg->destination_port = bpf_ntohs(tcp.dest);
    __u32 hdr_end = l4_off + tcp.doff * 4;
    seg->payload = l4_end > hdr_end ? l4_end - hdr_end : 0;
    seg->syn = tcp.syn;
    seg->fin = tcp.fin;
    return 1;
}

/// Stamps the activity of a tracked port (see the header); never drops.
static __always_inline int zp_stamp_activity(const struct zp_segment *seg) {
    struct zp_config *cfg = config();
    if (!cfg)
        return TC_ACT_UNSPEC;
    __u32 port = seg->destination_port;
    struct zp_activity *act = bpf_map_lookup_elem(&zp_activity, &port);
    if (!act)
        return TC_ACT_UNSPEC;
    // Pure ACKs (window updates, keepalives) are not client activity.
    if (seg->payload == 0 && !seg->syn && !seg->fin)
        return TC_ACT_UNSPEC;
    struct zp_conn conn;
    __builtin_memset(&conn, 0, sizeof(conn));
    conn.client = seg->source;
    conn.server = seg->destination;
    conn.client_port = seg->source_port;
    conn.server_port = seg->destination_port;
    if (ignored_connection(&conn, cfg, &zp_probe_src, kubelet_conns()))
        return TC_ACT_UNSPEC;
    act->last_ns = bpf_ktime_get_ns();
    return TC_ACT_UNSPEC;
}

// ---------------------------------------------------------------------------------------------
// Connections across a scale-down (decisions 0045 and 0046). Kept apart from the programs above.

#define ZP_MAX_HELD 4096
#define ZP_EVENT_CONNECTION 1 // a new connection went to a handover listener
#define ZP_EVENT_HELD 2       // a held connection's peer sent data or FIN

/// One TCP connection as the application's socket sees it: local = the pod side.
struct zp_conn_key {
    struct zp_addr local;
    struct zp_addr remote;
    __u16 local_port;  // host order
    __u16 remote_port; // host order
    __u32 pad;
};

/// A held connection: whose checkpoint dumped it, whether its wake was sent, dropped segments.
struct zp_held_value {
    __u32 owner;
    __u32 woken;
    __u64 dropped;
};

/// A port whose new connections queue on a handover listener (bound to the port itself).
struct zp_handover_value {
    __u32 owner;
    __u32 woken;
};

/// What user space reads from zp_events.
struct zp_event {
    __u32 kind;  // ZP_EVENT_*
    __u32 port;  // local port (host order)
    __u32 owner; // the owner written by user space
    __u32 pad;
};

/// Not preallocated: empty while the app runs and small while it is scaled down, so a pod pays
/// for the connections it holds, not for ZP_MAX_HELD of them (~0.5 MiB each pod when preallocated).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_HELD);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct zp_conn_key);
    __type(value, struct zp_held_value);
} zp_held SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct zp_handover_value);
} zp_handover SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16384);
} zp_events SEC(".maps");

static __always_inline void zp_emit(__u32 kind, __u32 port, __u32 owner) {
    struct zp_event ev = {.kind = kind, .port = port, .owner = owner, .pad = 0};
    // A full ring drops the event; the wake flag stays set, so user space re-reads the maps
    // (PodRedirector.pendingWakes) when it re-arms.
    bpf_ringbuf_output(&zp_events, &ev, sizeof(ev), 0);
}

/// sk_lookup: a connection to a redirected port with a handover listener, from a source that is
/// not a probe source and not opened by kubelet, takes the regular lookup (to the handover
/// listener bound to the port) and wakes the owner once per arming.
static __always_inline int zp_handover_takes(struct bpf_sk_lookup *ctx, __u32 port) {
    struct zp_handover_value *h = bpf_map_lookup_elem(&zp_handover, &port);
    if (!h)
        return 0;
    // The connection as its client opened it (remote = client), to recognise probes by their
    // source and kubelet's connections by their 4-tuple.
    struct zp_conn conn;
    __builtin_memset(&conn, 0, sizeof(conn));
    if (ctx->family == ZP_AF_INET) {
        addr_from_v4(&conn.client, *(volatile __u32 *)&ctx->remote_ip4);
        addr_from_v4(&conn.server, *(volatile __u32 *)&ctx->local_ip4);
    } else if (ctx->family == ZP_AF_INET6) {
        __u32 w[4];
        w[0] = *(volatile __u32 *)&ctx->remote_ip6[0];
        w[1] = *(volatile __u32 *)&ctx->remote_ip6[1];
        w[2] = *(volatile __u32 *)&ctx->remote_ip6[2];
        w[3] = *(volatile __u32 *)&ctx->remote_ip6[3];
        __builtin_memcpy(conn.client.bytes, w, 16);
        w[0] = *(volatile __u32 *)&ctx->local_ip6[0];
        w[1] = *(volatile __u32 *)&ctx->local_ip6[1];
        w[2] = *(volatile __u32 *)&ctx->local_ip6[2];
        w[3] = *(volatile __u32 *)&ctx->local_ip6[3];
        __builtin_memcpy(conn.server.bytes, w, 16);
    } else {
        return 0;
    }
    conn.client_port = bpf_ntohs(ctx->remote_port);
    conn.server_port = (__u16)port;
    if (bpf_map_lookup_elem(&zp_probe_src, &conn.client))
        return 0; // probes are answered by the activator without a restore
    // kubelet's probes too, when the pod recognises kubelet (decision 0040).
    struct zp_config *cfg = config();
    void *kubelet = kubelet_conns();
    if (cfg && cfg->identify_kubelet && kubelet && bpf_map_lookup_elem(kubelet, &conn))
        return 0;
    if (!h->woken) {
        h->woken = 1; // a race only sends the event twice
        zp_emit(ZP_EVENT_CONNECTION, port, h->owner);
    }
    return 1;
}

/// The handover listeners bound to the any-address, by port (| ZP_HANDOVER_V6 for IPv6); a
/// socket leaves the map when it closes.
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, ZP_MAX_PORTS * 2);
    __type(key, __u32);
    __type(value, __u64);
} zp_handover_socks SEC(".maps");

/// A connection the handover takes goes to the handover listener itself, not to whichever
/// listener of the port the regular lookup finds first: CRIU's restore binds the application's
/// listener before the processes run, and an IPv4 listener is found before ours (newest first),
/// so the connections arriving during the restore would wait in a backlog no one accepts from
/// yet, and be dropped once it is full (decision 0056). An IPv4 connection takes an IPv4
/// listener, else a dual-stack IPv6 one. Without one (closed at post-resume, or bound to one
/// address), the regular lookup runs.
static __always_inline void zp_handover_assign(struct bpf_sk_lookup *ctx, __u32 port) {
    __u32 key = port | (ctx->family == ZP_AF_INET6 ? ZP_HANDOVER_V6 : 0);
    struct bpf_sock *sk = bpf_map_lookup_elem(&zp_handover_socks, &key);
    if (!sk && ctx->family == ZP_AF_INET) {
        key = port | ZP_HANDOVER_V6;
        sk = bpf_map_lookup_elem(&zp_handover_socks, &key);
    }
    if (!sk)
        return;
    // -EAFNOSUPPORT for an IPv6-only socket and an IPv4 connection: the regular lookup runs.
    bpf_sk_assign(ctx, sk, BPF_SK_LOOKUP_F_NO_REUSEPORT);
    bpf_sk_release(sk);
}

/// TC_ACT_SHOT for a segment of a held connection (and the wake event for its data or FIN),
/// TC_ACT_UNSPEC otherwise.
static __always_inline int zp_hold(const struct zp_segment *seg) {
    struct zp_conn_key key;
    __builtin_memset(&key, 0, sizeof(key));
    key.local = seg->destination;
    key.remote = seg->source;
    key.local_port = seg->destination_port;
    key.remote_port = seg->source_port;
    struct zp_held_value *held = bpf_map_lookup_elem(&zp_held, &key);
    if (!held)
        return TC_ACT_UNSPEC;
    __sync_fetch_and_add(&held->dropped, 1);
    if ((seg->payload > 0 || seg->fin) && !held->woken) {
        held->woken = 1;
        zp_emit(ZP_EVENT_HELD, key.local_port, held->owner);
    }
    return TC_ACT_SHOT;
}

/// tc ingress (one tcx link per interface of the pod netns): first the hold (a held connection's
/// segments are dropped), then the activity stamp. One program rather than two: each further
/// program on a device's tcx chain costs the attach an RCU grace period (tens of milliseconds of
/// Create on a busy node).
SEC("tc")
int zp_tc_ingress(struct __sk_buff *skb) {
    struct zp_segment seg;
    if (!zp_parse_segment(skb, &seg))
        return TC_ACT_UNSPEC;
    if (zp_hold(&seg) == TC_ACT_SHOT)
        return TC_ACT_SHOT;
    return zp_stamp_activity(&seg);
}

/// On the handover listener's reuseport group: selects nothing, so the kernel picks a listener
/// by hash for new connections and, when a listener closes, migrates its queued connections to
/// another one (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: without the net.ipv4.tcp_migrate_req sysctl).
SEC("sk_reuseport/migrate")
int zp_reuseport_migrate(struct sk_reuseport_md *md) {
    return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
