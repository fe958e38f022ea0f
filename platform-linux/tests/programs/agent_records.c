/* Hit records through the in-process agent's ring (issue 11): THREADS workers record
 * probe t with words (i, t) CALLS times each; the main thread sends worker 0 SIGUSR1,
 * one at a time, and the handler records probe 100 on the interrupted thread.
 * Usage: agent-records THREADS CALLS SIGNALS. Prints "sent N". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The register file a trampoline passes: rdi is word 14, rsi word 13. */
typedef void (*rec_fn)(uint64_t *regs, unsigned long probe);
static rec_fn rec;
static long calls;
static atomic_int acked, running;
static long handled;

static void on_usr1(int sig) {
    (void)sig;
    uint64_t regs[27] = {0};
    regs[14] = (uint64_t)handled++;
    rec(regs, 100);
    atomic_store(&acked, 1);
}

static void *worker(void *arg) {
    long t = (long)arg;
    uint64_t regs[27] = {0};
    regs[13] = (uint64_t)t;
    if (t == 0)
        atomic_store(&running, 1);
    for (long i = 0; i < calls; i++) {
        regs[14] = (uint64_t)i;
        rec(regs, (unsigned long)t);
    }
    if (t == 0)
        atomic_store(&running, 2);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    int threads = atoi(argv[1]);
    calls = atol(argv[2]);
    long signals = atol(argv[3]);
    rec = (rec_fn)dlsym(RTLD_DEFAULT, "probe_agent_record");
    if (!rec)
        return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t[64];
    for (long i = 0; i < threads && i < 64; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    while (atomic_load(&running) == 0)
        sched_yield();
    long sent = 0;
    while (sent < signals && atomic_load(&running) == 1) {
        atomic_store(&acked, 0);
        pthread_kill(t[0], SIGUSR1);
        while (!atomic_load(&acked))
            sched_yield();
        sent++;
    }
    for (int i = 0; i < threads && i < 64; i++)
        pthread_join(t[i], NULL);
    printf("sent %ld\n", sent);
    return 0;
}
