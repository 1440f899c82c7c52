// See include/CZPSystem.h.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "CZPSystem.h"

int czpsystem_setns(int fd, int nstype) { return setns(fd, nstype); }

int czpsystem_unshare_network(void) { return unshare(CLONE_NEWNET); }

int czpsystem_clone_newnet(void) { return CLONE_NEWNET; }

int czpsystem_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int czpsystem_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int czpsystem_unshare_fs(void) { return unshare(CLONE_FS); }

void czpsystem_name_this_thread(const char *name) { (void)prctl(PR_SET_NAME, name, 0, 0, 0); }

int czpsystem_unshare_mount_namespace(void) { return unshare(CLONE_NEWNS); }

int czpsystem_clone_newns(void) { return CLONE_NEWNS; }

int czpsystem_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int czpsystem_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int czpsystem_pidfd_getfd(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }

int czpsystem_kcmp_same_file(int pid1, int pid2, int fd1, int fd2) {
    return (int)syscall(SYS_kcmp, pid1, pid2, 0 /* KCMP_FILE */, fd1, fd2);
}

int czpsystem_tcp_state(int fd, unsigned char *state) {
    struct tcp_info info;
    socklen_t length = sizeof(info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -1;
    *state = info.tcpi_state;
    return 0;
}

int czpsystem_tcp_accept_queue(int fd, unsigned int *queued, unsigned int *backlog) {
    struct tcp_info info;
    socklen_t length = sizeof(info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -1;
    *queued = info.tcpi_unacked;
    *backlog = info.tcpi_sacked;
    return 0;
}

int czpsystem_perf_dummy_event_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_DUMMY;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    return (int)syscall(SYS_perf_event_open, &attr, 0 /* this thread */, -1 /* any CPU */, -1, PERF_FLAG_FD_CLOEXEC);
}
