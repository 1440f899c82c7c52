// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// What the pod object (zpbpf.bpf.c) and the node object (zpbpf_node.bpf.c) share: the layouts of
// the maps one object creates and the other reaches through a map of maps, and the small address
// helpers both use. The two objects must agree on every map definition below (type, key, value,
// flags): the kernel refuses an inner map that differs from the outer map's template.
//
// Ports are host byte order u32 keys in every map. Addresses are 16 bytes, IPv4 as ::ffff:a.b.c.d.

#ifndef ZPBPF_SHARED_H
#define ZPBPF_SHARED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ZP_MAX_PORTS 128
// zp_handover_socks keys: the port, with this bit for an IPv6 listener.
#define ZP_HANDOVER_V6 0x10000
#define ZP_MAX_PROBE_SOURCES 64
#define ZP_MAX_KUBELET_NAMES 16
#define ZP_MAX_KUBELET_CONNS 4096
#define ZP_MAX_PODS 4096
#define ZP_COMM_LEN 16
#define ZP_AF_INET 2
#define ZP_AF_INET6 10

/// A pod's configuration, one entry at index 0, written by user space.
struct zp_config {
    __u64 netns_cookie;     // the pod's network namespace
    __u32 ignore_loopback;  // 1: traffic from 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 never counts
    __u32 identify_kubelet; // 1: kubelet's connections (node setting learn-probe-sources) never count
};

/// Activity of one tracked port; the entry is created by user space, the programs only update it.
struct zp_activity {
    __u64 last_ns; // bpf_ktime_get_ns() of the last counted ingress segment, 0 = never
    __u64 open;    // open passive connections that passed the source filter
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

// Map definitions (as types, so that an outer map can name them as its template). Sizes instead
// of BTF key and value types: an object that uses a struct only in locals has no complete BTF type
// for it, and libbpf refuses an inner map whose sizes it cannot determine.

/// zp_activity (pod): port → activity.
#define ZP_ACTIVITY_MAP                                                                            \
    struct {                                                                                       \
        __uint(type, BPF_MAP_TYPE_HASH);                                                           \
        __uint(max_entries, ZP_MAX_PORTS);                                                         \
        __uint(key_size, sizeof(__u32));                                                           \
        __uint(value_size, sizeof(struct zp_activity));                                            \
    }

/// zp_probe_src (pod): probe source address → 1.
#define ZP_PROBE_SRC_MAP                                                                           \
    struct {                                                                                       \
        __uint(type, BPF_MAP_TYPE_HASH);                                                           \
        __uint(max_entries, ZP_MAX_PROBE_SOURCES);                                                 \
        __uint(key_size, sizeof(struct zp_addr));                                                  \
        __uint(value_size, sizeof(__u32));                                                         \
    }

/// zp_config (pod): one struct zp_config at index 0.
#define ZP_CONFIG_MAP                                                                              \
    struct {                                                                                       \
        __uint(type, BPF_MAP_TYPE_ARRAY);                                                          \
        __uint(max_entries, 1);                                                                    \
        __uint(key_size, sizeof(__u32));                                                           \
        __uint(value_size, sizeof(struct zp_config));                                              \
    }

/// zp_kubelet_conns (node): the open connections kubelet made (key struct zp_conn), value =
/// bpf_ktime_get_ns() of the connect. One map per node; the pod object reaches it through its
/// zp_node_kubelet_conns.
#define ZP_KUBELET_CONNS_MAP                                                                       \
    struct {                                                                                       \
        __uint(type, BPF_MAP_TYPE_LRU_HASH);                                                       \
        __uint(max_entries, ZP_MAX_KUBELET_CONNS);                                                 \
        __uint(key_size, sizeof(struct zp_conn));                                                  \
        __uint(value_size, sizeof(__u64));                                                         \
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

/// 1 when traffic of this connection (as its client opened it) must not count as a pod's client
/// activity: from a probe source address (`probe_src`, may be NULL), from loopback (if the pod
/// ignores it), or opened by kubelet (`kubelet_conns`, may be NULL, if the pod identifies kubelet).
static __always_inline int ignored_connection(const struct zp_conn *c, const struct zp_config *cfg, void *probe_src,
                                              void *kubelet_conns) {
    if (cfg->ignore_loopback && is_loopback(&c->client))
        return 1;
    if (probe_src && bpf_map_lookup_elem(probe_src, &c->client) != NULL)
        return 1;
    return cfg->identify_kubelet && kubelet_conns && bpf_map_lookup_elem(kubelet_conns, c) != NULL;
}

#endif
