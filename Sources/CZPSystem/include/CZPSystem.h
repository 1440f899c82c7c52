// CZPSystem: the few libc calls ZPSystem cannot make from Swift, because Swift's Glibc module
// declares them only under _GNU_SOURCE (setns, unshare, pipe2, accept4) or not at all (pidfd_open,
// pidfd_getfd, kcmp: syscall(2) is variadic; TCP_INFO's struct). Implementation detail of
// ZPSystem: only ZPSystem imports this module, and no C type declared here reaches its public API.
#ifndef CZPSYSTEM_H
#define CZPSYSTEM_H

/// setns(fd, nstype): moves the calling thread into the namespace `fd` refers to.
/// Returns 0, or -1 with errno set.
int czpsystem_setns(int fd, int nstype);

/// unshare(CLONE_NEWNET): moves the calling thread into a new, empty network namespace.
/// Returns 0, or -1 with errno set.
int czpsystem_unshare_network(void);

/// The CLONE_NEWNET flag (the nstype of a network namespace for setns).
int czpsystem_clone_newnet(void);

/// pipe2(fds, O_CLOEXEC). Returns 0, or -1 with errno set.
int czpsystem_pipe_cloexec(int fds[2]);

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC). Returns the new descriptor, or -1 with errno set.
int czpsystem_accept_cloexec(int fd);

/// unshare(CLONE_FS): gives the calling thread its own copy of the file system attributes (root,
/// working directory, umask), so that a umask set afterwards applies to this thread only.
/// Returns 0, or -1 with errno set.
int czpsystem_unshare_fs(void);

/// prctl(PR_SET_NAME): names the calling thread (at most 15 bytes are kept). A new thread inherits
/// its creator's name otherwise, so a helper thread would pass for one of the creator's pool.
void czpsystem_name_this_thread(const char *name);

/// unshare(CLONE_NEWNS): moves the calling thread into a new mount namespace, a copy of its
/// current one (the thread's file system attributes become its own first, as CLONE_NEWNS implies
/// CLONE_FS). Returns 0, or -1 with errno set.
int czpsystem_unshare_mount_namespace(void);

/// The CLONE_NEWNS flag (the nstype of a mount namespace for setns).
int czpsystem_clone_newns(void);

/// pivot_root(new_root, put_old) (no glibc wrapper). Returns 0, or -1 with errno set.
int czpsystem_pivot_root(const char *new_root, const char *put_old);

/// pidfd_open(pid, 0): a descriptor referring to process `pid` (close-on-exec).
/// Returns the descriptor, or -1 with errno set.
int czpsystem_pidfd_open(int pid);

/// pidfd_getfd(pidfd, fd, 0): a copy, in this process, of descriptor `fd` of the process `pidfd`
/// refers to (close-on-exec; needs ptrace access to it). Returns the copy, or -1 with errno set.
int czpsystem_pidfd_getfd(int pidfd, int fd);

/// kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): 0 when descriptor `fd1` of `pid1` and `fd2` of `pid2`
/// refer to the same open file, 1 or 2 (an ordering) when not, -1 with errno set on failure.
int czpsystem_kcmp_same_file(int pid1, int pid2, int fd1, int fd2);

/// The state of the TCP socket `fd` (getsockopt TCP_INFO's `tcpi_state`: the kernel's TCP_* state,
/// the number `/proc/net/tcp` prints). Returns 0, or -1 with errno set (not a TCP socket:
/// EOPNOTSUPP or ENOPROTOOPT).
int czpsystem_tcp_state(int fd, unsigned char *state);

/// The accept queue of the listening TCP socket `fd` (getsockopt TCP_INFO: `tcpi_unacked` is the
/// number of connections waiting to be accepted, `tcpi_sacked` the backlog).
/// Returns 0, or -1 with errno set.
int czpsystem_tcp_accept_queue(int fd, unsigned int *queued, unsigned int *backlog);

/// perf_event_open(2) of a disabled software dummy event (PERF_COUNT_SW_DUMMY, user space only)
/// bound to the calling thread, on any CPU, close-on-exec. It counts nothing; while it exists the
/// kernel keeps its perf scheduling hooks switched on. Returns the descriptor, or -1 with errno set.
int czpsystem_perf_dummy_event_open(void);

#endif
