/* SDT markers with semaphores, for the USDT tests (tests/usdt.rs).
 *
 * Every marker is guarded by its semaphore, as real programs do (python's `function__entry`
 * runs only when a tracer set `python_function__entry_semaphore`): the program counts the
 * markers it fired and prints the counts, so a tracer's counts can be compared with them
 * exactly, and a count of zero proves the semaphore was never set.
 *
 * Markers (provider `demo`):
 *   tick(i, counter, i * 3)   once per iteration; `counter` is a global (`%rip`-relative)
 *   pair(i, site)             twice per iteration, at two sites sharing one semaphore
 *   name(str, i)              once per iteration, a string argument
 *   kern_a(i), kern_b(i)      once per iteration each: one for the kernel, one for probe
 *
 * Usage:
 *   usdt_demo run N          N iterations, then print the counts
 *   usdt_demo sleep          print the semaphores' addresses, then loop forever (1 ms sleep)
 *   usdt_demo idle           print the semaphores' addresses, then wait forever (no marker)
 *   usdt_demo kern N         wait until kern_a's and kern_b's semaphores are both set (at
 *                            most 5 s), then N iterations; prints the counts and the largest
 *                            value of pair's semaphore it saw
 */
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

unsigned short demo_tick_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short demo_pair_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short demo_name_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short demo_kern_a_semaphore __attribute__((unused)) __attribute__((section(".probes")));
unsigned short demo_kern_b_semaphore __attribute__((unused)) __attribute__((section(".probes")));

#define ENABLED(name) (*(volatile unsigned short *)&demo_##name##_semaphore != 0)

int counter = 100;
static const char *const names[] = {"alpha", "beta", "gamma"};
static long fired_tick, fired_pair, fired_name, fired_kern_a, fired_kern_b;
static unsigned short pair_max;

__attribute__((noinline)) static void site_one(long i) {
    if (ENABLED(pair)) {
        STAP_PROBE2(demo, pair, i, 1);
        fired_pair++;
    }
}

__attribute__((noinline)) static void site_two(long i) {
    if (ENABLED(pair)) {
        STAP_PROBE2(demo, pair, i, 2);
        fired_pair++;
    }
}

__attribute__((noinline)) static void kern_a(long i) {
    if (ENABLED(kern_a)) {
        STAP_PROBE1(demo, kern_a, i);
        fired_kern_a++;
    }
}

__attribute__((noinline)) static void kern_b(long i) {
    if (ENABLED(kern_b)) {
        STAP_PROBE1(demo, kern_b, i);
        fired_kern_b++;
    }
}

__attribute__((noinline)) static void step(int i) {
    if (ENABLED(tick)) {
        STAP_PROBE3(demo, tick, i, counter, (long)i * 3);
        fired_tick++;
    }
    site_one(i);
    site_two(i);
    if (ENABLED(name)) {
        STAP_PROBE2(demo, name, names[i % 3], i);
        fired_name++;
    }
    kern_a(i);
    kern_b(i);
    unsigned short p = *(volatile unsigned short *)&demo_pair_semaphore;
    if (p > pair_max)
        pair_max = p;
    counter++;
}

static void report(void) {
    printf("fired tick: %ld\nfired pair: %ld\nfired name: %ld\n", fired_tick, fired_pair,
           fired_name);
    printf("fired kern_a: %ld\nfired kern_b: %ld\n", fired_kern_a, fired_kern_b);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "run";
    long n = argc > 2 ? atol(argv[2]) : 10;
    if (strcmp(mode, "idle") == 0) {
        printf("tick %p\npair %p\nname %p\n", (void *)&demo_tick_semaphore,
               (void *)&demo_pair_semaphore, (void *)&demo_name_semaphore);
        fflush(stdout);
        for (;;)
            pause();
    }
    if (strcmp(mode, "sleep") == 0) {
        printf("tick %p\npair %p\nname %p\n", (void *)&demo_tick_semaphore,
               (void *)&demo_pair_semaphore, (void *)&demo_name_semaphore);
        fflush(stdout);
        struct timespec ms = {0, 1000000};
        for (int i = 0;; i++) {
            step(i);
            nanosleep(&ms, NULL);
        }
    }
    if (strcmp(mode, "kern") == 0) {
        struct timespec ms = {0, 1000000};
        for (int w = 0; w < 5000 && !(ENABLED(kern_a) && ENABLED(kern_b)); w++)
            nanosleep(&ms, NULL);
    }
    for (long i = 0; i < n; i++)
        step((int)i);
    report();
    printf("pair semaphore max: %u\n", (unsigned)pair_max);
    return 0;
}
