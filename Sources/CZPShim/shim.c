#define _GNU_SOURCE
#include <malloc.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "CZPShim.h"

int czpshim_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

short czpshim_posix_spawn_setsid(void) { return POSIX_SPAWN_SETSID; }

int czpshim_so_peercred(void) { return SO_PEERCRED; }

/*
 * One malloc arena for all threads of a shim process, set before main so that no thread has made
 * its own yet. A shim is mostly idle (scaled down), and glibc's per-thread arenas kept ~0.13 MiB of
 * each shim private; one arena costs nothing measurable here (docs/decisions/0035-shim-memory.md).
 * Runs in every process that links ZPShim: the shim executable and ZPShim's tests.
 */
__attribute__((constructor)) static void czpshim_single_malloc_arena(void) { mallopt(M_ARENA_MAX, 1); }

int czpshim_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
