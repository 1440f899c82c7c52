// See include/CZPBPF.h.

#include "CZPBPF.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

const char *czpbpf_source_sha256(void) { return czpbpf_object_source_sha256; }
const char *czpbpf_embedded_object_sha256(void) { return czpbpf_object_sha256; }
const unsigned char *czpbpf_embedded_object(void) { return czpbpf_object; }

int czpbpf_is_bpffs(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0)
        return -errno;
    return fs.f_type == 0xcafe4a11 ? 1 : 0; /* BPF_FS_MAGIC */
}
