#define _GNU_SOURCE
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CZPShim.h"

int czpshim_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

short czpshim_posix_spawn_setsid(void) { return POSIX_SPAWN_SETSID; }

int czpshim_so_peercred(void) { return SO_PEERCRED; }

int czpshim_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
