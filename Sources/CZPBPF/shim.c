// See include/CZPBPF.h.

#include "CZPBPF.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/vfs.h>

static __thread char *capture_buf;
static __thread size_t capture_len;

static int czpbpf_print(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG || capture_buf == NULL || capture_len == 0)
        return 0;
    size_t used = strnlen(capture_buf, capture_len);
    if (used + 1 >= capture_len)
        return 0;
    return vsnprintf(capture_buf + used, capture_len - used, format, args);
}

static pthread_once_t print_once = PTHREAD_ONCE_INIT;
static void install_print(void) { libbpf_set_print(czpbpf_print); }

void czpbpf_capture_log(char *buf, size_t len) {
    pthread_once(&print_once, install_print);
    capture_buf = buf;
    capture_len = len;
    if (buf != NULL && len > 0)
        buf[0] = '\0';
}

struct bpf_object *czpbpf_open_embedded(void) {
    pthread_once(&print_once, install_print);
    struct bpf_object_open_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.sz = sizeof(opts);
    opts.object_name = "zpbpf";
    return bpf_object__open_mem(czpbpf_object, (size_t)czpbpf_object_len, &opts);
}

struct bpf_object *czpbpf_open_embedded_node(void) {
    pthread_once(&print_once, install_print);
    struct bpf_object_open_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.sz = sizeof(opts);
    opts.object_name = "zpbpf_node";
    return bpf_object__open_mem(czpbpf_node_object, (size_t)czpbpf_node_object_len, &opts);
}

const char *czpbpf_node_source_sha256(void) { return czpbpf_node_object_source_sha256; }
const char *czpbpf_node_embedded_object_sha256(void) { return czpbpf_node_object_sha256; }
const unsigned char *czpbpf_node_embedded_object(void) { return czpbpf_node_object; }

const char *czpbpf_source_sha256(void) { return czpbpf_object_source_sha256; }
const char *czpbpf_embedded_object_sha256(void) { return czpbpf_object_sha256; }
const unsigned char *czpbpf_embedded_object(void) { return czpbpf_object; }

int czpbpf_is_bpffs(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0)
        return -errno;
    return fs.f_type == 0xcafe4a11 ? 1 : 0; /* BPF_FS_MAGIC */
}

struct czpbpf_events {
    struct ring_buffer *rb;
    struct czpbpf_event *out;
    int max;
    int n;
};

static int czpbpf_events_sample(void *ctx, void *data, size_t size) {
    struct czpbpf_events *events = ctx;
    if (size >= sizeof(struct czpbpf_event) && events->out != NULL && events->n < events->max) {
        memcpy(&events->out[events->n], data, sizeof(struct czpbpf_event));
        events->n++;
    }
    return 0;
}

struct czpbpf_events *czpbpf_events_open(int map_fd) {
    struct czpbpf_events *events = calloc(1, sizeof(*events));
    if (events == NULL)
        return NULL;
    events->rb = ring_buffer__new(map_fd, czpbpf_events_sample, events, NULL);
    if (events->rb == NULL) {
        int saved = errno;
        free(events);
        errno = saved;
        return NULL;
    }
    return events;
}

int czpbpf_events_fd(struct czpbpf_events *events) { return ring_buffer__epoll_fd(events->rb); }

int czpbpf_events_drain(struct czpbpf_events *events, struct czpbpf_event *out, int max) {
    events->out = out;
    events->max = max;
    events->n = 0;
    int rc = ring_buffer__consume(events->rb);
    events->out = NULL;
    if (rc < 0)
        return rc;
    return events->n;
}

void czpbpf_events_close(struct czpbpf_events *events) {
    if (events == NULL)
        return;
    ring_buffer__free(events->rb);
    free(events);
}
