// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// zeropod-swift's node-wide eBPF program: one sockops program on the cgroup v2 root for every pod
// of the node (decision 0052). A cgroup takes at most 64 programs of one attach type, so one program
// per pod stopped the 65th pod; this one finds the pod of a socket by its network namespace cookie.
//
//   zp_sockops      In a registered pod's netns (zp_pod_activity has the netns cookie): counts the
//                   open passive (server side) TCP connections per tracked port, with the pod's
//                   source filter (copies in zp_pod_probe_src, zp_pod_config), from PASSIVE_ESTABLISHED to
//                   TCP_CLOSE. In the node's netns: records the 4-tuple of every connection that
//                   kubelet opens (TCP_CONNECT_CB runs in the connecting task, after the source port
//                   was chosen; kubelet = a process whose thread group leader is named kubelet, k3s,
//                   ..., see zp_kubelet_names), and forgets it when the socket closes. The pods' own
//                   programs read zp_kubelet_conns too: traffic of those connections is never
//                   activity (decision 0040).
//
// User space (ZPBPF's NodeSockops) creates one such object per node, pins it under bpffs so every
// shim shares it, registers each pod's maps under the pod's netns cookie, and removes the object
// when the last pod is gone.
//
// Build: clang -target bpf -O2 -g, then llvm-strip -g (keeps BTF); see scripts/bpf-embed.sh.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "zpbpf_shared.h"

#define ZP_MAX_POD_SOURCES 65536

/// The node's configuration, one entry at index 0, written by user space.
struct zp_node_config {
    __u64 node_netns_cookie; // the netns kubelet's connections are recognised in (the node's)
};

/// Who registered a pod (user space only: lets a later process drop the entries of one that died).
struct zp_pod_owner {
    __u32 pid;
    __u32 pinned;      // 1: the pod is pinned in bpffs and outlives its process
    __u64 start_ticks; // the process's start time (/proc/PID/stat field 22), against PID reuse
};

/// The parts of task_struct the kubelet check reads; CO-RE relocates them against the kernel's BTF.
struct task_struct {
    struct task_struct *group_leader;
    char comm[ZP_COMM_LEN];
} __attribute__((preserve_access_index));

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct zp_node_config);
} zp_node_config SEC(".maps");

/// Process names (comm of the thread group leader, NUL-padded to 16 bytes) whose connections are
/// kubelet's; written by user space.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_KUBELET_NAMES);
    __type(key, char[ZP_COMM_LEN]);
    __type(value, __u32);
} zp_kubelet_names SEC(".maps");

ZP_KUBELET_CONNS_MAP zp_kubelet_conns SEC(".maps");

/// The pods by netns cookie: each one's zp_activity (an inner map: the pod's tc program stamps it
/// and this program counts in it). Not preallocated: a node pays for the pods it has. Every write
/// to a map of maps from user space waits for an RCU grace period, so the pods' settings and probe
/// sources are plain maps below (decision 0052).
struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __uint(max_entries, ZP_MAX_PODS);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, __u64);
    __array(values, ZP_ACTIVITY_MAP);
} zp_pod_activity SEC(".maps");

/// Each pod's settings (a copy of its zp_config), by netns cookie.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PODS);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, __u64);
    __type(value, struct zp_config);
} zp_pod_config SEC(".maps");

/// A probe source of a pod: (netns cookie, address).
struct zp_pod_source {
    __u64 cookie;
    struct zp_addr addr;
};

/// Each pod's probe source addresses (a copy of its zp_probe_src).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_POD_SOURCES);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct zp_pod_source);
    __type(value, __u32);
} zp_pod_probe_src SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, ZP_MAX_PODS);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, __u64);
    __type(value, struct zp_pod_owner);
} zp_pod_owner SEC(".maps");

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

/// Reads a 16-byte address field of the sockops context: whole u32 loads (volatile keeps clang
/// from narrowing them into byte reads of the context, which the verifier refuses).
#define ZP_READ_IP6(dst, field)                                                                    \
    do {                                                                                           \
        __u32 w_[4];                                                                               \
        w_[0] = *(volatile __u32 *)&(field)[0];                                                    \
        w_[1] = *(volatile __u32 *)&(field)[1];                                                    \
        w_[2] = *(volatile __u32 *)&(field)[2];                                                    \
        w_[3] = *(volatile __u32 *)&(field)[3];                                                    \
        __builtin_memcpy((dst)->bytes, w_, 16);                                                    \
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
    __u16 local_port = (__u16)skops->local_port;              // host byte order
    __u16 remote_port = (__u16)bpf_ntohl(skops->remote_port); // network order, upper half
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
    __u32 zero = 0;
    struct zp_node_config *node = bpf_map_lookup_elem(&zp_node_config, &zero);
    if (!node)
        return 1;
    __u64 netns = bpf_get_netns_cookie(skops);
    struct zp_conn conn;
    switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB: {
        // kubelet connecting from the node (to any address and port: whether the server is a pod
        // of this node is decided where the connection arrives).
        if (netns != node->node_netns_cookie || !current_is_kubelet())
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
        void *activity = bpf_map_lookup_elem(&zp_pod_activity, &netns);
        if (!activity)
            return 1;
        __u32 port = skops->local_port;
        struct zp_activity *act = bpf_map_lookup_elem(activity, &port);
        if (!act)
            return 1;
        struct zp_config *cfg = bpf_map_lookup_elem(&zp_pod_config, &netns);
        if (!cfg)
            return 1;
        if (!sockops_conn(skops, 0, &conn))
            return 1;
        struct zp_pod_source source = {.cookie = netns};
        source.addr = conn.client;
        if (bpf_map_lookup_elem(&zp_pod_probe_src, &source) || ignored_connection(&conn, cfg, NULL, &zp_kubelet_conns))
            return 1;
        __sync_fetch_and_add(&act->open, 1);
        // Only counted sockets of a pod get state callbacks, so each one is uncounted exactly once.
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    case BPF_SOCK_OPS_STATE_CB: {
        if (skops->args[1] != BPF_TCP_CLOSE)
            return 1;
        // A kubelet connection closed (a pod in the node's netns, host network, is checked below).
        if (netns == node->node_netns_cookie && sockops_conn(skops, 1, &conn))
            bpf_map_delete_elem(&zp_kubelet_conns, &conn);
        void *activity = bpf_map_lookup_elem(&zp_pod_activity, &netns);
        if (!activity)
            return 1;
        __u32 port = skops->local_port;
        struct zp_activity *act = bpf_map_lookup_elem(activity, &port);
        if (act && act->open > 0)
            __sync_fetch_and_add(&act->open, -1);
        return 1;
    }
    default:
        return 1;
    }
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
