// See include/CZPSystem.h.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CZPSystem.h"

int czpsystem_setns(int fd, int nstype) { return setns(fd, nstype); }

int czpsystem_unshare_network(void) { return unshare(CLONE_NEWNET); }

int czpsystem_clone_newnet(void) { return CLONE_NEWNET; }

int czpsystem_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int czpsystem_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int czpsystem_unshare_fs(void) { return unshare(CLONE_FS); }
