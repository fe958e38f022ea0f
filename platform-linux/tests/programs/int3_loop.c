/* `int3-loop N [T]`: T threads (default 1: the main thread itself) each execute `int3` N
 * times. The bare ptrace stop round trip of probe-bench, single- and multi-threaded. */
#include <pthread.h>
#include <stdlib.h>

static long n;

static void *loop(void *arg) {
    for (long i = 0; i < n; i++)
        __asm__ volatile("int3");
    return arg;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 1;
    long t = argc > 2 ? atol(argv[2]) : 1;
    if (t <= 1) {
        loop(NULL);
        return 0;
    }
    pthread_t th[64];
    if (t > 64)
        t = 64;
    for (long i = 0; i < t; i++)
        pthread_create(&th[i], NULL, loop, NULL);
    for (long i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    return 0;
}
