// Small C helpers for ZPShim: calls Swift cannot make directly (variadic prctl) and GNU constants
// that the Glibc module does not export. Implementation detail of ZPShim; never in a public API.
#ifndef CZPSHIM_H
#define CZPSHIM_H

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants are re-parented to this process.
/// Returns 0, or -1 with errno set.
int czpshim_set_child_subreaper(void);

/// The POSIX_SPAWN_SETSID flag of glibc's posix_spawnattr_setflags.
short czpshim_posix_spawn_setsid(void);

/// The SO_PEERCRED socket option number.
int czpshim_so_peercred(void);

#include <spawn.h>

/// posix_spawn_file_actions_addchdir_np (glibc 2.29+, GNU): the child changes into `path`.
int czpshim_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);

#endif
