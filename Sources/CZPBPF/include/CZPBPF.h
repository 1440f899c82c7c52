// CZPBPF: the small C layer under ZPBPF. It re-exports the libbpf entry points that ZPBPF calls and
// adds what Swift cannot express: LIBBPF_OPTS structs and libbpf's print callback. (Work on a thread
// inside a network namespace is ZPSystem's `NetworkNamespace`.)
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

/// The node-wide object compiled from bpf/zpbpf_node.bpf.c (generated file zpbpf_node_object.c),
/// with its hashes as above.
extern const unsigned char czpbpf_node_object[];
extern const unsigned long czpbpf_node_object_len;
extern const char czpbpf_node_object_source_sha256[];
extern const char czpbpf_node_object_sha256[];
const char *czpbpf_node_source_sha256(void);
const char *czpbpf_node_embedded_object_sha256(void);
const unsigned char *czpbpf_node_embedded_object(void);

/// Opens the embedded node object (bpf_object__open_mem) with name "zpbpf_node". NULL with errno on
/// failure.
struct bpf_object *czpbpf_open_embedded_node(void);

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

/// One wake event of bpf/zpbpf.bpf.c's zp_events ring buffer (struct zp_event there).
struct czpbpf_event {
    uint32_t kind;
    uint32_t port;
    uint32_t owner;
    uint32_t pad;
};

/// A libbpf ring buffer over zp_events whose samples are copied into a small array; one reader
/// thread at a time (decision 0045).
struct czpbpf_events;

/// Opens the ring buffer of the map `map_fd` (ring_buffer__new). NULL with errno on failure.
struct czpbpf_events *czpbpf_events_open(int map_fd);
/// The epoll descriptor that is readable when samples wait (ring_buffer__epoll_fd).
int czpbpf_events_fd(struct czpbpf_events *events);
/// Consumes every waiting sample (ring_buffer__consume) and copies at most `max` of them to `out`
/// (further ones are dropped: wake events repeat harmlessly). Returns the number copied, or -errno.
int czpbpf_events_drain(struct czpbpf_events *events, struct czpbpf_event *out, int max);
/// Frees the ring buffer (ring_buffer__free).
void czpbpf_events_close(struct czpbpf_events *events);

/// 1 when `path` is on a bpf filesystem (statfs magic BPF_FS_MAGIC), 0 when not, -errno on error.
int czpbpf_is_bpffs(const char *path);

#endif
