/* A program run with probe's agent in LD_PRELOAD: it counts hits through the agent's
 * handler itself (what a jump-patched probe's trampoline does), from several threads and a
 * forked child, and says what it can see of the agent's set-up.
 * Usage: agent-user FD THREADS CALLS */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*hit_fn)(void *regs, unsigned long probe);
static hit_fn hit;
static long calls;

static void *worker(void *arg) {
    unsigned long probe = (unsigned long)arg;
    for (long i = 0; i < calls * (long)(probe + 1); i++)
        hit(NULL, probe);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    int fd = atoi(argv[1]);
    int threads = atoi(argv[2]);
    calls = atol(argv[3]);
    hit = (hit_fn)dlsym(RTLD_DEFAULT, "probe_agent_hit");
    printf("agent=%s variable=%s fd=%s\n", hit ? "loaded" : "absent",
           getenv("PROBE_AGENT_FD") ? "visible" : "gone",
           fcntl(fd, F_GETFD) == -1 ? "closed" : "open");
    fflush(stdout);
    if (!hit)
        return 1;
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++)
        pthread_create(&t[i], NULL, worker, (void *)(unsigned long)i);
    for (int i = 0; i < threads && i < 64; i++)
        pthread_join(t[i], NULL);
    /* The main thread and a forked child, which must not write the parent thread's block. */
    for (long i = 0; i < calls; i++)
        hit(NULL, 0);
    pid_t c = fork();
    if (c == 0) {
        for (long i = 0; i < calls; i++)
            hit(NULL, 0);
        _exit(0);
    }
    for (long i = 0; i < calls; i++)
        hit(NULL, 0);
    int st;
    waitpid(c, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
