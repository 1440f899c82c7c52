// CZPBPF: the small C layer under ZPBPF. It re-exports the libbpf entry points that ZPBPF calls and
// adds what Swift cannot express: LIBBPF_OPTS structs, libbpf's print callback, and work that must
// run on a thread that joined another network namespace (setns is per thread).
// Only ZPBPF imports this module; no type declared here may appear in ZPBPF's public API.
#ifndef CZPBPF_H
#define CZPBPF_H

#include <stddef.h>
#include <stdint.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/// The BPF object compiled from bpf/zpbpf.bpf.c (generated file zpbpf_object.c). Static storage:
/// bpf_object__open_mem does not copy its buffer, and this one lives as long as the process.
extern const unsigned char czpbpf_object[];
extern const unsigned long czpbpf_object_len;
/// SHA-256 (hex) of the bpf/zpbpf.bpf.c that the embedded object was compiled from.
extern const char czpbpf_object_source_sha256[];
/// SHA-256 (hex) of the object bytes in czpbpf_object, as generated.
extern const char czpbpf_object_sha256[];
/// The hashes and the object as pointers (Swift cannot import arrays of unknown size).
const char *czpbpf_source_sha256(void);
const char *czpbpf_embedded_object_sha256(void);
const unsigned char *czpbpf_embedded_object(void);

/// Opens the embedded object (bpf_object__open_mem) with name "zpbpf". NULL with errno on failure.
/// While `log` is non-NULL, libbpf's messages (including verifier logs) of this thread's calls
/// are appended to it until czpbpf_capture_log(NULL, 0) is called.
struct bpf_object *czpbpf_open_embedded(void);

/// Routes libbpf's print callback for the calling thread into `buf` (NUL-terminated, truncated
/// at `len`); `buf == NULL` stops capturing. Messages of other threads are dropped.
void czpbpf_capture_log(char *buf, size_t len);

/// The attach type of a tcx ingress link (BPF_TCX_INGRESS, kernel 6.6+). libbpf 1.1.2's uapi
/// headers predate it; the value is fixed by the kernel ABI.
#define CZPBPF_TCX_INGRESS 46

/// On a fresh thread that joined the network namespace `netns_fd`: lists its interfaces
/// (if_nameindex), attaches `prog_fd` as a tcx ingress link to each (bpf_link_create) and reads
/// the namespace's cookie (SO_NETNS_COOKIE). Writes up to `max` interface indexes and link fds.
/// Returns the number of links, or -errno; on error no link is left open.
int czpbpf_netns_attach_tcx(int netns_fd, int prog_fd, int max, int *ifindexes, int *link_fds,
                            uint64_t *netns_cookie);

/// Probes tcx: on a fresh thread in a new, empty network namespace (unshare), attaches `prog_fd`
/// as a tcx ingress link to lo and closes it. Returns 0 when that works, or -errno.
int czpbpf_probe_tcx(int prog_fd);

/// 1 when `path` is on a bpf filesystem (statfs magic BPF_FS_MAGIC), 0 when not, -errno on error.
int czpbpf_is_bpffs(const char *path);

/// Creates a socket inside the network namespace `netns_fd` (on a fresh thread that joined it).
/// A socket keeps its namespace for life, whichever thread uses it later. Returns fd or -errno.
int czpbpf_socket_in_netns(int netns_fd, int domain, int type, int protocol);

#endif
