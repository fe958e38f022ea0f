/* Executes `int3` N times (argv[1]): the bare ptrace stop round trip of probe-bench. */
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1;
    for (long i = 0; i < n; i++)
        __asm__ volatile("int3");
    return 0;
}
