// See include/CZPBPF.h.

#include "CZPBPF.h"

#include <errno.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

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

struct netns_job {
    int netns_fd;
    int (*work)(struct netns_job *);
    int result;
    // attach_tcx
    int prog_fd, max;
    int *ifindexes, *link_fds;
    uint64_t *cookie;
    // socket
    int domain, type, protocol;
};

static void *netns_thread(void *arg) {
    struct netns_job *job = arg;
    if (setns(job->netns_fd, CLONE_NEWNET) != 0) {
        job->result = -errno;
        return NULL;
    }
    job->result = job->work(job);
    return NULL;
}

static int run_in_netns(struct netns_job *job) {
    pthread_t thread;
    int err = pthread_create(&thread, NULL, netns_thread, job);
    if (err != 0)
        return -err;
    pthread_join(thread, NULL);
    return job->result;
}

static int attach_tcx_work(struct netns_job *job) {
    int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -errno;
    socklen_t len = sizeof(*job->cookie);
    int rc = getsockopt(probe, SOL_SOCKET, SO_NETNS_COOKIE, job->cookie, &len);
    int saved = errno;
    close(probe);
    if (rc != 0)
        return -saved;
    struct if_nameindex *names = if_nameindex();
    if (names == NULL)
        return -errno;
    int count = 0, result = 0;
    for (struct if_nameindex *n = names; n->if_index != 0; n++) {
        if (count == job->max) {
            result = -E2BIG;
            break;
        }
        int fd = bpf_link_create(job->prog_fd, (int)n->if_index, CZPBPF_TCX_INGRESS, NULL);
        if (fd < 0) {
            result = fd;
            break;
        }
        job->ifindexes[count] = (int)n->if_index;
        job->link_fds[count] = fd;
        count++;
    }
    if_freenameindex(names);
    if (result < 0) {
        for (int i = 0; i < count; i++)
            close(job->link_fds[i]);
        return result;
    }
    return count;
}

int czpbpf_netns_attach_tcx(int netns_fd, int prog_fd, int max, int *ifindexes, int *link_fds,
                            uint64_t *netns_cookie) {
    struct netns_job job = {.netns_fd = netns_fd, .work = attach_tcx_work, .prog_fd = prog_fd,
                            .max = max, .ifindexes = ifindexes, .link_fds = link_fds,
                            .cookie = netns_cookie};
    return run_in_netns(&job);
}

static int socket_work(struct netns_job *job) {
    int fd = socket(job->domain, job->type | SOCK_CLOEXEC, job->protocol);
    return fd < 0 ? -errno : fd;
}

int czpbpf_socket_in_netns(int netns_fd, int domain, int type, int protocol) {
    struct netns_job job = {.netns_fd = netns_fd, .work = socket_work, .domain = domain,
                            .type = type, .protocol = protocol};
    return run_in_netns(&job);
}

const char *czpbpf_source_sha256(void) { return czpbpf_object_source_sha256; }
const char *czpbpf_embedded_object_sha256(void) { return czpbpf_object_sha256; }
const unsigned char *czpbpf_embedded_object(void) { return czpbpf_object; }

static void *probe_tcx_thread(void *arg) {
    struct netns_job *job = arg;
    if (unshare(CLONE_NEWNET) != 0) {
        job->result = -errno;
        return NULL;
    }
    int lo = (int)if_nametoindex("lo");
    if (lo == 0) {
        job->result = -errno;
        return NULL;
    }
    int fd = bpf_link_create(job->prog_fd, lo, CZPBPF_TCX_INGRESS, NULL);
    job->result = fd < 0 ? fd : 0;
    if (fd >= 0)
        close(fd);
    return NULL;
}

int czpbpf_probe_tcx(int prog_fd) {
    struct netns_job job = {.prog_fd = prog_fd};
    pthread_t thread;
    int err = pthread_create(&thread, NULL, probe_tcx_thread, &job);
    if (err != 0)
        return -err;
    pthread_join(thread, NULL);
    return job.result;
}

int czpbpf_is_bpffs(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0)
        return -errno;
    return fs.f_type == 0xcafe4a11 ? 1 : 0; /* BPF_FS_MAGIC */
}
