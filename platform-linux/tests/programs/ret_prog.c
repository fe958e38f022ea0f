/* Return-probe scenarios (issue 5), one per mode; each prints what it did so that a traced
 * run can be compared with an untraced one.
 *   fib N            recursion: fib(N), the number of calls
 *   deep N           recursion N calls deep: deep(N) -> deep(N-1) ... -> deep(1)
 *   longjmp N        longjmp out of two nested probed frames (jumper -> inner) N times,
 *                    plus N normal calls of inner()
 *   threads T N      T threads calling leaf() N times each
 *   fork             forking() forks inside; parent and child both return through it
 *   block T          prints "ready", waits for a line on stdin, starts T threads that
 *                    each block inside blocked() (a pipe read), prints "inside", then
 *                    blocks in wait_line() (stdin) itself; on a second line it releases
 *                    the threads and prints their results.
 *   tail N           calls tailer(0..N-1): even x return from it, odd x leave it by a tail
 *                    call to leaf() (a `jmp`, written in assembly so that no -O level
 *                    changes it); prints the sum */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static long fib_calls;

__attribute__((noinline)) long fib(long n) {
    fib_calls++;
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

__attribute__((noinline)) long deep(long n) {
    if (n <= 1)
        return 1;
    long r = deep(n - 1) + 1;
    __asm__ volatile("" ::: "memory");
    return r;
}

static jmp_buf env;
static long inner_calls;

__attribute__((noinline)) long inner(long x) {
    inner_calls++;
    if (x & 1)
        longjmp(env, (int)x);
    __asm__ volatile("" ::: "memory");
    return x * 3;
}

__attribute__((noinline)) long jumper(long x) {
    long r = inner(x) + 1;
    __asm__ volatile("" ::: "memory");
    return r;
}

__attribute__((noinline)) long leaf(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 2 + 1;
}

/* tailer(x): x + 7 for even x, leaf(x) (by a tail jump) for odd x. */
__asm__(".text\n"
        ".globl tailer\n"
        ".type tailer, @function\n"
        "tailer:\n"
        "  test $1, %dil\n"
        "  jnz 1f\n"
        "  lea 7(%rdi), %rax\n"
        "  ret\n"
        "1:\n"
        "  jmp leaf\n"
        ".size tailer, .-tailer\n");
long tailer(long x);

static long per_thread;

static void *leaf_thread(void *arg) {
    long sum = 0;
    for (long i = 0; i < per_thread; i++)
        sum += leaf(i);
    return (void *)sum;
}

__attribute__((noinline)) int forking(void) {
    pid_t p = fork();
    __asm__ volatile("" ::: "memory");
    return p == 0 ? 100 : 200;
}

static int pipefd[2];
static atomic_int inside;

__attribute__((noinline)) long blocked(long id) {
    atomic_fetch_add(&inside, 1);
    char c;
    if (read(pipefd[0], &c, 1) != 1)
        return -1;
    return id * 10 + (c - '0');
}

__attribute__((noinline)) long wait_line(void) {
    char buf[64];
    printf("waiting\n");
    fflush(stdout);
    if (!fgets(buf, sizeof buf, stdin))
        return -1;
    return (long)strlen(buf);
}

static void *block_thread(void *arg) {
    return (void *)blocked((long)arg);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fib";
    if (!strcmp(mode, "fib")) {
        long n = argc > 2 ? atol(argv[2]) : 10;
        long r = fib(n);
        printf("fib(%ld) = %ld, calls %ld\n", n, r, fib_calls);
    } else if (!strcmp(mode, "deep")) {
        long n = argc > 2 ? atol(argv[2]) : 10;
        printf("deep(%ld) = %ld\n", n, deep(n));
    } else if (!strcmp(mode, "longjmp")) {
        long n = argc > 2 ? atol(argv[2]) : 10, jumps = 0, sum = 0;
        for (long i = 0; i < n; i++) {
            int v = setjmp(env);
            if (v == 0) {
                sum += jumper(2 * i + 1); /* never returns normally */
            } else {
                jumps++;
                sum += v;
            }
            sum += inner(2 * i); /* returns normally */
        }
        printf("jumps %ld inner calls %ld sum %ld\n", jumps, inner_calls, sum);
    } else if (!strcmp(mode, "threads")) {
        int t = argc > 2 ? atoi(argv[2]) : 8;
        per_thread = argc > 3 ? atol(argv[3]) : 1000;
        pthread_t th[64];
        long total = 0;
        for (int i = 0; i < t && i < 64; i++)
            pthread_create(&th[i], NULL, leaf_thread, NULL);
        for (int i = 0; i < t && i < 64; i++) {
            void *r;
            pthread_join(th[i], &r);
            total += (long)r;
        }
        printf("threads %d calls %ld sum %ld\n", t, t * per_thread, total);
    } else if (!strcmp(mode, "fork")) {
        fflush(stdout);
        int r = forking();
        if (r == 100) {
            printf("child returned %d\n", r);
            fflush(stdout);
            _exit(5);
        }
        int st = 0;
        wait(&st);
        printf("parent returned %d, child exit %d\n", r, WEXITSTATUS(st));
    } else if (!strcmp(mode, "tail")) {
        long n = argc > 2 ? atol(argv[2]) : 10, sum = 0;
        for (long i = 0; i < n; i++)
            sum += tailer(i);
        printf("tail calls %ld sum %ld\n", n, sum);
    } else if (!strcmp(mode, "block")) {
        int t = argc > 2 ? atoi(argv[2]) : 2;
        char buf[64];
        pthread_t th[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(buf, sizeof buf, stdin))
            return 2;
        if (pipe(pipefd))
            return 3;
        for (long i = 0; i < t && i < 16; i++)
            pthread_create(&th[i], NULL, block_thread, (void *)i);
        while (atomic_load(&inside) < t)
            usleep(1000);
        printf("inside\n");
        fflush(stdout);
        long len = wait_line();
        if (write(pipefd[1], "1234567890123456", t) != t)
            return 4;
        long sum = 0;
        for (int i = 0; i < t && i < 16; i++) {
            void *r;
            pthread_join(th[i], &r);
            sum += (long)r;
        }
        printf("line %ld sum %ld\n", len, sum);
    }
    return 0;
}
