/* Calls probe_target() N times (argv[1], default 10), prints the sum, and exits with
 * argv[2] (default 0); HITS_QUIET in the environment silences the sum. The test target for breakpoints, the resolver and gdb's per-hit
 * cost in probe-bench. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long probe_target(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 2 + 1;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += probe_target(i);
    if (!getenv("HITS_QUIET"))
        printf("%ld\n", sum);
    return argc > 2 ? atoi(argv[2]) : 0;
}
