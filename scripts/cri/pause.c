/* The pod sandbox's pause process for the CRI test bed (no registry here): sleeps until SIGINT or
 * SIGTERM ends it, and reaps every child that is reparented to it (it is the pod's pid 1 when the
 * pod shares its pid namespace). Built with `gcc -static` by scripts/cri-images.sh. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) { (void)signo; _exit(0); }

static void reap(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stopping = {.sa_handler = stop};
    struct sigaction reaping = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    if (sigaction(SIGINT, &stopping, NULL) < 0 || sigaction(SIGTERM, &stopping, NULL) < 0 ||
        sigaction(SIGCHLD, &reaping, NULL) < 0) {
        return 1;
    }
    for (;;) pause();
}
