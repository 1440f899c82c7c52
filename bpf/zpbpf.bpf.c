// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// zeropod-swift eBPF programs, one object per pod network namespace.
//
//   zp_sk_lookup    sk_lookup, attached to the pod netns: while the redirect is on for a TCP port,
//                   new connections to that port are assigned to the activator's listening socket
//                   (SOCKHASH zp_listeners, keyed by port). No packet is rewritten; established
//                   connections never reach sk_lookup, so they survive a switch.
//   zp_tc_activity  tc ingress (tcx link) on every interface of the pod netns: stamps the
//                   monotonic time (bpf_ktime_get_ns) of the last client segment that carries data,
//                   SYN or FIN for a tracked port, unless the source is a probe source or (per node
//                   setting) a loopback address.
//   zp_sockops      sockops on the cgroup v2 root. In the pod's netns (by netns cookie): counts the
//                   open passive (server side) TCP connections per tracked port, with the same
//                   source filter, from PASSIVE_ESTABLISHED to TCP_CLOSE. In the node's netns:
//                   records the 4-tuple of every connection that kubelet opens to a tracked port
//                   (TCP_CONNECT_CB runs in the connecting task, after the source port was chosen;
//                   kubelet = a process whose thread group leader is named kubelet, k3s, ..., see
//                   zp_kubelet_names), and forgets it when the socket closes. Traffic of those
//                   connections is never activity, in either program (docs/decisions/0040).
//
// Connections across a scale-down (decisions 0045, 0046; the section at the end of this file):
//   zp_tc_hold      tc ingress (a second tcx link on every interface): drops the segments of the
//                   TCP connections a checkpoint dumped (zp_held, by 4-tuple) until the restore has put
//                   their sockets back, so the peers see no reset; a segment with data or FIN wakes
//                   the owner (ringbuf zp_events).
//   zp_sk_lookup    (above) lets a new connection of a port with a handover listener (zp_handover)
//                   take the regular lookup to that listener, which the restored application's own
//                   listener joins (SO_REUSEPORT group); probe sources still go to the activator.
//   zp_reuseport_migrate  sk_reuseport/migrate on the handover listener's group: when the listener
//                   closes, its queued connections move to the application's listener.
//
// Build: clang -target bpf -O2 -g, then llvm-strip -g (keeps BTF); see scripts/bpf-embed.sh.
// Ports are host byte order u32 keys in every map. Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Every interface of a pod netns (lo, veth) has an Ethernet header at tc ingress; interfaces
// without one (L3 tunnels) are not expected in a pod and would be parsed wrongly.

#define ZP_MAX_PORTS 128
#define ZP_MAX_PROBE_SOURCES 64
#define ZP_MAX_KUBELET_NAMES 16
#define ZP_MAX_KUBELET_CONNS 4096
#define ZP_COMM_LEN 16
#define ZP_AF_INET 2
#define ZP_AF_INET6 10

/// Configuration, one entry at index 0, written by user space.
struct zp_config {
    __u64 netns_cookie;      // sockops only counts sockets of this netns
    __u32 ignore_loopback;   // 1: traffic from 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 never counts
    __u32 identify_kubelet;  // 1: record kubelet's connections (node setting learn-probe-sources)
    __u64 node_netns_cookie; // the netns kubelet's connections are recognised in (the node's)
};

/// Activity of one tracked port; the entry is created by user space, the programs only update it.
struct zp_activity {
    __u64 last_ns;  // bpf_ktime_get_ns() of the last counted ingress segment, 0 = never
    __u64 open;     // open passive connections that passed the source filter
};

struct zp_addr {
    __u8 bytes[16];
};

/// One TCP connection as its client opened it; addresses as in every map (IPv4 as ::ffff:a.b.c.d),
/// ports in host byte order.
struct zp_conn {
    struct zp_addr client;
    struct zp_addr server;
    __u16 client_port;
    __u16 server_port;
    __u32 pad; // always 0
};

/// The parts of task_struct the kubelet check reads; CO-RE relocates them against the kernel's BTF.
struct task_struct {
    struct task_struct *group_leader;
    char comm[ZP_COMM_LEN];
} __attribute__((preserve_access_index));

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

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct zp_activity);
} zp_activity SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PROBE_SOURCES);
    __type(key, struct zp_addr);
    __type(value, __u32);
} zp_probe_src SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct zp_config);
} zp_config SEC(".maps");

/// Process names (comm of the thread group leader, NUL-padded to 16 bytes) whose connections are
/// kubelet's; written by user space.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_KUBELET_NAMES);
    __type(key, char[ZP_COMM_LEN]);
    __type(value, __u32);
} zp_kubelet_names SEC(".maps");

/// Open connections kubelet made to a tracked port: value = bpf_ktime_get_ns() of the connect.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, ZP_MAX_KUBELET_CONNS);
    __type(key, struct zp_conn);
    __type(value, __u64);
} zp_kubelet_conns SEC(".maps");

static __always_inline struct zp_config *config(void) {
    __u32 zero = 0;
    return bpf_map_lookup_elem(&zp_config, &zero);
}

static __always_inline void addr_from_v4(struct zp_addr *a, __u32 v4_be) {
    __builtin_memset(a, 0, sizeof(*a));
    a->bytes[10] = 0xff;
    a->bytes[11] = 0xff;
    __builtin_memcpy(&a->bytes[12], &v4_be, 4);
}

static __always_inline int is_v4_mapped(const struct zp_addr *a) {
    for (int i = 0; i < 10; i++)
        if (a->bytes[i] != 0)
            return 0;
    return a->bytes[10] == 0xff && a->bytes[11] == 0xff;
}

static __always_inline int is_loopback(const struct zp_addr *a) {
    if (is_v4_mapped(a))
        return a->bytes[12] == 127;
    for (int i = 0; i < 15; i++)
        if (a->bytes[i] != 0)
            return 0;
    return a->bytes[15] == 1;
}

/// 1 when traffic of this connection (as its client opened it) must not count as client activity:
/// from a probe source address, from loopback (if ignored), or opened by kubelet.
static __always_inline int ignored_connection(const struct zp_conn *c, const struct zp_config *cfg) {
    if (cfg->ignore_loopback && is_loopback(&c->client))
        return 1;
    if (bpf_map_lookup_elem(&zp_probe_src, &c->client) != NULL)
        return 1;
    return cfg->identify_kubelet && bpf_map_lookup_elem(&zp_kubelet_conns, c) != NULL;
}

/// 1 when the current task belongs to a process named like kubelet (its thread group leader's comm:
/// a client library may rename the thread that connects, e.g. gRPC C-core's event_engine).
static __always_inline int current_is_kubelet(void) {
    struct task_struct *task = bpf_get_current_task_btf();
    struct task_struct *leader = task->group_leader;
    char name[ZP_COMM_LEN];
    __builtin_memset(name, 0, sizeof(name));
    // Copy up to the NUL and leave the rest zero: comm is not NUL-padded on every kernel.
    for (int i = 0; i < ZP_COMM_LEN - 1; i++) {
        char ch = leader->comm[i];
        if (ch == 0)
            break;
        name[i] = ch;
    }
    return bpf_map_lookup_elem(&zp_kubelet_names, name) != NULL;
}

static __always_inline int zp_handover_takes(struct bpf_sk_lookup *ctx, __u32 port);

SEC("sk_lookup")
int zp_sk_lookup(struct bpf_sk_lookup *ctx) {
    if (ctx->protocol != IPPROTO_TCP)
        return SK_PASS;
    __u32 port = ctx->local_port;
    __u32 *on = bpf_map_lookup_elem(&zp_redirect_on, &port);
    if (!on || *on == 0)
        return SK_PASS;
    if (zp_handover_takes(ctx, port))
        return SK_PASS;
    struct bpf_sock *sk = bpf_map_lookup_elem(&zp_listeners, &port);
    if (!sk)
        return SK_PASS;
    // An IPv4-only activator socket cannot take IPv6 connections (-EAFNOSUPPORT): the regular
    // lookup then runs, as if the redirect were off for that family.
    bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    return SK_PASS;
}

SEC("tc")
int zp_tc_activity(struct __sk_buff *skb) {
    struct zp_config *cfg = config();
    if (!cfg)
        return TC_ACT_UNSPEC;
    struct zp_conn conn;
    __builtin_memset(&conn, 0, sizeof(conn));
    __u32 l4_off, l4_end;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return TC_ACT_UNSPEC;
        if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
            return TC_ACT_UNSPEC;
        addr_from_v4(&conn.client, ip.saddr);
        addr_from_v4(&conn.server, ip.daddr);
        l4_off = ETH_HLEN + ip.ihl * 4;
        // tot_len is 0 in BIG TCP (GSO over 64 KiB) packets: fall back to the skb length.
        l4_end = ip.tot_len ? ETH_HLEN + bpf_ntohs(ip.tot_len) : skb->len;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return TC_ACT_UNSPEC;
        if (ip6.nexthdr != IPPROTO_TCP) // extension headers are not followed
            return TC_ACT_UNSPEC;
        __builtin_memcpy(conn.client.bytes, &ip6.saddr, 16);
        __builtin_memcpy(conn.server.bytes, &ip6.daddr, 16);
        l4_off = ETH_HLEN + sizeof(ip6);
        l4_end = ip6.payload_len ? l4_off + bpf_ntohs(ip6.payload_len) : skb->len;
    } else {
        return TC_ACT_UNSPEC;
    }
    struct tcphdr tcp;
    if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) < 0)
        return TC_ACT_UNSPEC;
    __u32 port = bpf_ntohs(tcp.dest);
    struct zp_activity *act = bpf_map_lookup_elem(&zp_activity, &port);
    if (!act)
        return TC_ACT_UNSPEC;
    __u32 payload = 0;
    __u32 hdr_end = l4_off + tcp.doff * 4;
    if (l4_end > hdr_end)
        payload = l4_end - hdr_end;
    // Pure ACKs (window updates, keepalives) are not client activity.
    if (payload == 0 && !tcp.syn && !tcp.fin)
        return TC_ACT_UNSPEC;
    conn.client_port = bpf_ntohs(tcp.source);
    conn.server_port = (__u16)port;
    if (ignored_connection(&conn, cfg))
        return TC_ACT_UNSPEC;
    act->last_ns = bpf_ktime_get_ns();
    return TC_ACT_UNSPEC;
}

/// Reads a 16-byte address field of the sockops context: whole u32 loads (volatile keeps clang
/// from narrowing them into byte reads of the context, which the verifier refuses).
#define ZP_READ_IP6(dst, field)                                            \
    do {                                                                   \
        __u32 w_[4];                                                       \
        w_[0] = *(volatile __u32 *)&(field)[0];                            \
        w_[1] = *(volatile __u32 *)&(field)[1];                            \
        w_[2] = *(volatile __u32 *)&(field)[2];                            \
        w_[3] = *(volatile __u32 *)&(field)[3];                            \
        __builtin_memcpy((dst)->bytes, w_, 16);                            \
    } while (0)

/// The connection of a sockops callback as its client opened it: `local_is_client` for active
/// (connecting) sockets. IPv4 connections of IPv6 sockets (v4-mapped) read the IPv4 fields, which
/// the kernel fills for them (the IPv6 source may still be unset at TCP_CONNECT_CB). 0 if not TCP/IP.
static __always_inline int sockops_conn(struct bpf_sock_ops *skops, int local_is_client, struct zp_conn *c) {
    __builtin_memset(c, 0, sizeof(*c));
    struct zp_addr local, remote;
    __u32 family = skops->family;
    int v4 = family == ZP_AF_INET;
    if (family == ZP_AF_INET6) {
        ZP_READ_IP6(&remote, skops->remote_ip6);
        v4 = is_v4_mapped(&remote);
        if (!v4)
            ZP_READ_IP6(&local, skops->local_ip6);
    } else if (family != ZP_AF_INET) {
        return 0;
    }
    if (v4) {
        addr_from_v4(&local, *(volatile __u32 *)&skops->local_ip4);
        addr_from_v4(&remote, *(volatile __u32 *)&skops->remote_ip4);
    }
    __u16 local_port = (__u16)skops->local_port;                  // host byte order
    __u16 remote_port = (__u16)bpf_ntohl(skops->remote_port);     // network order, upper half
    if (local_is_client) {
        c->client = local;
        c->server = remote;
        c->client_port = local_port;
        c->server_port = remote_port;
    } else {
        c->client = remote;
        c->server = local;
        c->client_port = remote_port;
        c->server_port = local_port;
    }
    return 1;
}

SEC("sockops")
int zp_sockops(struct bpf_sock_ops *skops) {
    struct zp_config *cfg = config();
    if (!cfg || cfg->netns_cookie == 0)
        return 1;
    __u64 netns = bpf_get_netns_cookie(skops);
    struct zp_conn conn;
    switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB: {
        // kubelet connecting from the node to a tracked port (of any address: the pod's IPs need
        // not be known; a connection to another pod's address never matches this pod's traffic).
        if (!cfg->identify_kubelet || netns != cfg->node_netns_cookie)
            return 1;
        __u32 port = bpf_ntohl(skops->remote_port) & 0xffff;
        if (!bpf_map_lookup_elem(&zp_activity, &port) || !current_is_kubelet())
            return 1;
        if (!sockops_conn(skops, 1, &conn))
            return 1;
        __u64 now = bpf_ktime_get_ns();
        bpf_map_update_elem(&zp_kubelet_conns, &conn, &now, BPF_ANY);
        // The state callback forgets the connection when it closes.
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
        if (netns != cfg->netns_cookie)
            return 1;
        __u32 port = skops->local_port;
        struct zp_activity *act = bpf_map_lookup_elem(&zp_activity, &port);
        if (!act)
            return 1;
        if (!sockops_conn(skops, 0, &conn) || ignored_connection(&conn, cfg))
            return 1;
        __sync_fetch_and_add(&act->open, 1);
        // Only counted sockets of the pod get state callbacks, so each one is uncounted exactly once.
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    case BPF_SOCK_OPS_STATE_CB:
        if (skops->args[1] != BPF_TCP_CLOSE)
            return 1;
        if (netns == cfg->netns_cookie) {
            __u32 port = skops->local_port;
            struct zp_activity *act = bpf_map_lookup_elem(&zp_activity, &port);
            if (act && act->open > 0)
                __sync_fetch_and_add(&act->open, -1);
        } else if (netns == cfg->node_netns_cookie && sockops_conn(skops, 1, &conn)) {
            // A kubelet connection (of this pod's or another pod's program) closed.
            bpf_map_delete_elem(&zp_kubelet_conns, &conn);
        }
        return 1;
    default:
        return 1;
    }
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

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_HELD);
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
/// not a probe source, takes the regular lookup (to the handover listener bound to the port) and
/// wakes the owner once per arming.
static __always_inline int zp_handover_takes(struct bpf_sk_lookup *ctx, __u32 port) {
    struct zp_handover_value *h = bpf_map_lookup_elem(&zp_handover, &port);
    if (!h)
        return 0;
    struct zp_addr src;
    if (ctx->family == ZP_AF_INET) {
        addr_from_v4(&src, *(volatile __u32 *)&ctx->remote_ip4);
    } else if (ctx->family == ZP_AF_INET6) {
        __u32 w[4];
        w[0] = *(volatile __u32 *)&ctx->remote_ip6[0];
        w[1] = *(volatile __u32 *)&ctx->remote_ip6[1];
        w[2] = *(volatile __u32 *)&ctx->remote_ip6[2];
        w[3] = *(volatile __u32 *)&ctx->remote_ip6[3];
        __builtin_memcpy(src.bytes, w, 16);
    } else {
        return 0;
    }
    if (bpf_map_lookup_elem(&zp_probe_src, &src))
        return 0; // probes are answered by the activator without a restore
    if (!h->woken) {
        h->woken = 1; // a race only sends the event twice
        zp_emit(ZP_EVENT_CONNECTION, port, h->owner);
    }
    return 1;
}

SEC("tc")
int zp_tc_hold(struct __sk_buff *skb) {
    struct zp_conn_key key;
    __builtin_memset(&key, 0, sizeof(key));
    __u32 l4_off, l4_end;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return TC_ACT_UNSPEC;
        if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
            return TC_ACT_UNSPEC;
        addr_from_v4(&key.remote, ip.saddr);
        addr_from_v4(&key.local, ip.daddr);
        l4_off = ETH_HLEN + ip.ihl * 4;
        l4_end = ip.tot_len ? ETH_HLEN + bpf_ntohs(ip.tot_len) : skb->len;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return TC_ACT_UNSPEC;
        if (ip6.nexthdr != IPPROTO_TCP)
            return TC_ACT_UNSPEC;
        __builtin_memcpy(key.remote.bytes, &ip6.saddr, 16);
        __builtin_memcpy(key.local.bytes, &ip6.daddr, 16);
        l4_off = ETH_HLEN + sizeof(ip6);
        l4_end = ip6.payload_len ? l4_off + bpf_ntohs(ip6.payload_len) : skb->len;
    } else {
        return TC_ACT_UNSPEC;
    }
    struct tcphdr tcp;
    if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)) < 0)
        return TC_ACT_UNSPEC;
    key.local_port = bpf_ntohs(tcp.dest);
    key.remote_port = bpf_ntohs(tcp.source);
    struct zp_held_value *held = bpf_map_lookup_elem(&zp_held, &key);
    if (!held)
        return TC_ACT_UNSPEC;
    __sync_fetch_and_add(&held->dropped, 1);
    __u32 hdr_end = l4_off + tcp.doff * 4;
    if ((l4_end > hdr_end || tcp.fin) && !held->woken) {
        held->woken = 1;
        zp_emit(ZP_EVENT_HELD, key.local_port, held->owner);
    }
    return TC_ACT_SHOT;
}

/// On the handover listener's reuseport group: selects nothing, so the kernel picks a listener
/// by hash for new connections and, when a listener closes, migrates its queued connections to
/// another one (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: without the net.ipv4.tcp_migrate_req sysctl).
SEC("sk_reuseport/migrate")
int zp_reuseport_migrate(struct sk_reuseport_md *md) {
    return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
