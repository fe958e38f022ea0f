/* Signals nesting in the agent's hit path: a worker counts hits of probe 0 in a loop while
 * the main thread sends it SIGUSR1, one at a time (each acknowledged by the handler), and
 * the handler counts a hit of probe 0 too, on the same thread and block.
 * Usage: agent-signals CALLS SIGNALS. Prints "sent N". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*hit_fn)(void *regs, unsigned long probe);
static hit_fn hit;
static long calls;
static atomic_int acked;
static atomic_int running;

static void on_usr1(int sig) {
    (void)sig;
    hit(NULL, 0);
    atomic_store(&acked, 1);
}

static void *worker(void *arg) {
    (void)arg;
    atomic_store(&running, 1);
    for (long i = 0; i < calls; i++)
        hit(NULL, 0);
    atomic_store(&running, 2);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    calls = atol(argv[1]);
    long signals = atol(argv[2]);
    hit = (hit_fn)dlsym(RTLD_DEFAULT, "probe_agent_hit");
    if (!hit)
        return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    while (atomic_load(&running) == 0)
        sched_yield();
    long sent = 0;
    while (sent < signals && atomic_load(&running) == 1) {
        atomic_store(&acked, 0);
        pthread_kill(t, SIGUSR1);
        while (!atomic_load(&acked))
            sched_yield();
        sent++;
    }
    pthread_join(t, NULL);
    printf("sent %ld\n", sent);
    return 0;
}
