/* Jump-patched in-process probes on a running program (issue 11): THREADS threads call
 * labs CALLS times each between two points where the controller holds the process (it
 * patches labs before the first, restores it before the second), then CALLS times more.
 * Usage: agent-phases THREADS CALLS. Prints "ready ADDR", "counted", "done WRONG". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long (*labs_p)(long);
static long calls;
static pthread_barrier_t go, mid, back;
static long wrong;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void run(void) {
    long w = 0;
    for (long i = 0; i < calls; i++)
        w += labs_p(-i - 1) != i + 1;
    pthread_mutex_lock(&lock);
    wrong += w;
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&go);
    run();
    pthread_barrier_wait(&mid);
    pthread_barrier_wait(&back);
    run();
    return NULL;
}

static void await_line(void) {
    char buf[16];
    if (!fgets(buf, sizeof buf, stdin))
        exit(3);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int threads = atoi(argv[1]);
    calls = atol(argv[2]);
    labs_p = (long (*)(long))dlsym(RTLD_DEFAULT, "labs");
    pthread_barrier_init(&go, NULL, threads + 1);
    pthread_barrier_init(&mid, NULL, threads + 1);
    pthread_barrier_init(&back, NULL, threads + 1);
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("ready %p\n", (void *)labs_p);
    fflush(stdout);
    await_line();
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&mid);
    printf("counted\n");
    fflush(stdout);
    await_line();
    pthread_barrier_wait(&back);
    for (int i = 0; i < threads && i < 64; i++)
        pthread_join(t[i], NULL);
    printf("done %ld\n", wrong);
    return 0;
}
