/* A known call chain for `probe trace --stack` (issue 13, item 10): `stack N` calls
 * main -> a -> b -> c N times and c from main directly once, then prints the sum. Built
 * with and without frame pointers, so the unwinder takes both paths (frame chain, CFI). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long c(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

__attribute__((noinline)) long b(long x) {
    long r = c(x) * 3;
    __asm__ volatile("" ::: "memory");
    return r;
}

__attribute__((noinline)) long a(long x) {
    long r = b(x) + 2;
    __asm__ volatile("" ::: "memory");
    return r;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += a(i);
    sum += c(100);
    printf("sum %ld\n", sum);
    return 0;
}
