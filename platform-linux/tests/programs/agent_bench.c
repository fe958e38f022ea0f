/* The in-process benchmark's program: calls a function through a pointer in a timed loop,
 * as told on stdin: libc's labs, or (argument "own") a function of its own that starts with
 * a frame-pointer push (an instruction the kernel's uprobes emulate). Prints "ready ADDR"; for each line "N R" runs R rounds of N
 * calls and prints the best nanoseconds per call; "0 0" exits. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* labs with a frame: push %rbp first, whatever the compiler's flags. */
__asm__(".text\n.globl own\n.type own,@function\nown:\n"
        "push %rbp\nmov %rsp,%rbp\nmov %rdi,%rax\nneg %rax\ncmovs %rdi,%rax\n"
        "pop %rbp\nret\n.size own, .-own\n");
long own(long x);

int main(int argc, char **argv) {
    long (*volatile labs_p)(long) = (long (*)(long))dlsym(RTLD_DEFAULT, "labs");
    if (argc > 1 && argv[1][0] == 'o')
        labs_p = own;
    printf("ready %p\n", (void *)labs_p);
    fflush(stdout);
    long n, r;
    while (scanf("%ld %ld", &n, &r) == 2 && n > 0) {
        double best = 1e18;
        long acc = 0;
        for (long k = 0; k < r; k++) {
            double t = now();
            for (long i = 0; i < n; i++)
                acc += labs_p(i - 7);
            double d = (now() - t) / n;
            if (d < best)
                best = d;
        }
        printf("%.3f %ld\n", best, acc);
        fflush(stdout);
    }
    return 0;
}
