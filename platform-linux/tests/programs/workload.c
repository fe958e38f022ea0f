/* The tracer's test workload: every mode counts its own calls of the probed functions and
 * prints them, so a test can compare the tracer's counts with the program's.
 *
 *   workload calls N          work() N times
 *   workload kinds N          each of kind_emulated/boosted/riprel/step N times
 *   workload recurse N        fib(N), counting fib() calls
 *   workload threads T N      T threads call work() N times each, all at once (T = 1:
 *                             the main thread alone; WORKLOAD_QUIET: no output)
 *   workload fork N           work() N times, fork; the child calls it N times and exits 3
 *   workload forks P N        fork P children that are all alive at once (each waits until
 *                             the last is forked), each calls work() N times and exits 0
 *   workload exec N M         work() N times, then exec itself as `calls M`
 *   workload vfork M          vfork; the child execs itself as `calls M`
 *   workload alarm N          SIGALRM every 50us while calling each kind N times
 *   workload traps            raise(SIGTRAP) and a bare int3, caught by a handler
 *   workload dlopen LIB N     dlopen LIB, call plugin_fn N times, dlclose; twice
 *   workload spin             work() every millisecond until killed
 *   workload affinity         spin; on SIGUSR1 it sets its own CPU mask and prints it
 *   workload seccomp          install a seccomp filter that kills the process at any `mmap`,
 *                             print "ready", then kind_emulated and kind_step every ms; on
 *                             stdin EOF print the call count and exit 0
 *   workload lines            per line N of stdin, work() N times and print the total
 *   workload selfstep KIND N  kind_KIND N times with its own trap flag set: counts the
 *                             single-step traps (and those outside its own text)
 *   workload selfkill N       work() N times, then SIGKILL itself
 *   workload one KIND N       kind_KIND (emulated, boosted, riprel, step) N times, quietly
 *   workload threxec N        4 threads call kind_boosted/kind_step forever; after N ms
 *                             the main thread execs itself as `calls 10`
 *   workload threxit N        the same, but the main thread exits with status 5
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long work_calls;
long global_val = 42;

__attribute__((noinline)) long work(long x) {
    __atomic_fetch_add(&work_calls, 1, __ATOMIC_RELAXED);
    __asm__ volatile("" ::: "memory");
    return x * 2 + 1;
}

/* Functions whose first instruction is of a known kind for the core. */
/* endbr64 (a nop form, the first instruction of most functions of a CET-enabled distro):
 * emulated. (A leading push %rbp would be boosted on Linux: the tracer prefers a slot over an
 * emulation that writes the stack through /proc/PID/mem.) */
__attribute__((naked, noinline)) long kind_emulated(long x) {
    __asm__("endbr64\n\tpush %rbp\n\tmov %rsp, %rbp\n\tlea 1(%rdi), %rax\n\tpop %rbp\n\tret\n");
}
/* lea 1(%rdi),%rax: boosted (copied to a slot with a jump back). */
__attribute__((naked, noinline)) long kind_boosted(long x) {
    __asm__("lea 1(%rdi), %rax\n\tadd $1, %rax\n\tret\n");
}
/* mov global_val(%rip),%rax: boosted with its displacement relocated. */
__attribute__((naked, noinline)) long kind_riprel(long x) {
    __asm__("mov global_val(%rip), %rax\n\tadd %rdi, %rax\n\tret\n");
}
/* pushq global_val(%rip): RIP-relative and uses the stack: single-stepped. */
__attribute__((naked, noinline)) long kind_step(long x) {
    __asm__("pushq global_val(%rip)\n\tpop %rax\n\tadd %rdi, %rax\n\tret\n");
}

/* syscall: the core refuses it (never called). */
__attribute__((naked, noinline)) long kind_syscall(long x) {
    __asm__("syscall\n\tret\n");
}

__attribute__((noinline)) long fib(long n) {
    __atomic_fetch_add(&work_calls, 1, __ATOMIC_RELAXED);
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static long kinds(long n) {
    long s = 0;
    for (long i = 0; i < n; i++) {
        s += kind_emulated(i);
        s += kind_boosted(i);
        s += kind_riprel(i);
        s += kind_step(i);
    }
    return s;
}

static long thread_n;
static void *thread_main(void *arg) {
    for (long i = 0; i < thread_n; i++)
        work(i);
    return arg;
}

static void *forever(void *arg) {
    for (long i = 0;; i++) {
        kind_boosted(i);
        kind_step(i);
    }
    return arg;
}

static void start_forever_threads(void) {
    pthread_t th;
    for (int i = 0; i < 4; i++)
        pthread_create(&th, NULL, forever, NULL);
}

static volatile sig_atomic_t alarms, traps;
static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_trap(int sig) { (void)sig; traps++; }
static volatile long steps, foreign, others;
extern char __executable_start[], etext[];
static void on_step(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    ucontext_t *uc = ucv;
    unsigned long ip = uc->uc_mcontext.gregs[REG_RIP];
    if (si->si_code != TRAP_TRACE) {
        others++;
        return;
    }
    steps++;
    if (ip < (unsigned long)__executable_start || ip >= (unsigned long)etext)
        foreign++;
}
static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "calls";
    long n = argc > 2 ? atol(argv[2]) : 10;
    if (!strcmp(mode, "calls")) {
        long s = 0;
        for (long i = 0; i < n; i++)
            s += work(i);
        printf("work calls: %ld sum: %ld\n", work_calls, s);
    } else if (!strcmp(mode, "kinds")) {
        long s = kinds(n);
        printf("kind calls: %ld each sum: %ld\n", n, s);
    } else if (!strcmp(mode, "recurse")) {
        long f = fib(n);
        printf("fib(%ld) = %ld, fib calls: %ld\n", n, f, work_calls);
    } else if (!strcmp(mode, "threads")) {
        long t = n;
        thread_n = argc > 3 ? atol(argv[3]) : 1000;
        pthread_t th[64];
        if (t > 64)
            t = 64;
        if (t == 1)
            thread_main(NULL); /* one thread: the main one, no other */
        for (long i = 0; i < t && t > 1; i++)
            pthread_create(&th[i], NULL, thread_main, NULL);
        for (long i = 0; i < t && t > 1; i++)
            pthread_join(th[i], NULL);
        if (!getenv("WORKLOAD_QUIET"))
            printf("work calls: %ld\n", work_calls);
    } else if (!strcmp(mode, "fork")) {
        for (long i = 0; i < n; i++)
            work(i);
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            for (long i = 0; i < n; i++)
                work(i);
            printf("child work calls: %ld\n", work_calls);
            fflush(stdout);
            _exit(3);
        }
        int st = 0;
        waitpid(c, &st, 0);
        printf("parent work calls: %ld, child exit %d\n", work_calls, WEXITSTATUS(st));
    } else if (!strcmp(mode, "forks")) {
        long m = argc > 3 ? atol(argv[3]) : 10;
        int gate[2];
        if (pipe(gate))
            return 1;
        fflush(stdout);
        for (long c = 0; c < n; c++) {
            pid_t pid = fork();
            if (pid < 0)
                return 1;
            if (pid == 0) {
                char b;
                close(gate[1]);
                while (read(gate[0], &b, 1) > 0) {
                }
                for (long i = 0; i < m; i++)
                    work(i);
                _exit(work_calls == m ? 0 : 1);
            }
        }
        close(gate[1]); /* every child is forked and alive: let them run */
        long ok = 0, st_all = 0;
        int st;
        while (wait(&st) > 0)
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                ok++;
            else
                st_all = st;
        printf("children: %ld, exited 0: %ld (last other status %ld)\n", n, ok, st_all);
    } else if (!strcmp(mode, "exec")) {
        for (long i = 0; i < n; i++)
            work(i);
        printf("before exec work calls: %ld\n", work_calls);
        fflush(stdout);
        execl("/proc/self/exe", argv[0], "calls", argc > 3 ? argv[3] : "5", (char *)NULL);
        perror("exec");
        return 1;
    } else if (!strcmp(mode, "vfork")) {
        char m[32];
        snprintf(m, sizeof m, "%ld", n);
        work(0);
        pid_t c = vfork();
        if (c == 0) {
            execl("/proc/self/exe", argv[0], "calls", m, (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(c, &st, 0);
        work(1);
        printf("parent work calls: %ld, child exit %d\n", work_calls, WEXITSTATUS(st));
    } else if (!strcmp(mode, "alarm")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 50}, {0, 50}};
        setitimer(ITIMER_REAL, &it, NULL);
        long s = kinds(n);
        for (long i = 0; i < n; i++)
            s += work(i);
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("kind calls: %ld each, work calls: %ld, sum: %ld, alarms: %s\n", n, work_calls,
               s, alarms > 0 ? "yes" : "no");
        fprintf(stderr, "alarms: %d\n", (int)alarms);
    } else if (!strcmp(mode, "traps")) {
        signal(SIGTRAP, on_trap);
        raise(SIGTRAP);
        __asm__ volatile("int3");
        work(1);
        printf("traps: %d\n", (int)traps);
    } else if (!strcmp(mode, "dlopen")) {
        const char *lib = argc > 2 ? argv[2] : "libplugin.so";
        long m = argc > 3 ? atol(argv[3]) : 10;
        long calls = 0;
        for (int round = 0; round < 2; round++) {
            void *h = dlopen(lib, RTLD_NOW);
            if (!h) {
                fprintf(stderr, "dlopen: %s\n", dlerror());
                return 1;
            }
            long (*f)(long) = (long (*)(long))dlsym(h, "plugin_fn");
            for (long i = 0; i < m; i++, calls++)
                f(i);
            dlclose(h);
        }
        printf("plugin calls: %ld\n", calls);
    } else if (!strcmp(mode, "spin")) {
        printf("ready\n");
        fflush(stdout);
        for (long i = 0;; i++) {
            work(i);
            usleep(1000);
        }
    } else if (!strcmp(mode, "seccomp")) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        /* stdout and stdin are set up before the filter: no mmap after it */
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        setvbuf(stdout, NULL, _IONBF, 0);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
            perror("seccomp");
            return 1;
        }
        printf("ready\n");
        long calls = 0;
        for (;;) {
            char b[64];
            ssize_t r = read(0, b, sizeof b);
            if (r == 0)
                break;
            kind_emulated(calls);
            kind_step(calls);
            calls++;
            usleep(1000);
        }
        printf("calls: %ld\n", calls);
    } else if (!strcmp(mode, "affinity")) {
        /* Like spin; on SIGUSR1 the program pins itself to one CPU of its starting mask that
         * is not the one CPU it is confined to now (if it is), and prints "set CPU". */
        cpu_set_t start;
        sched_getaffinity(0, sizeof start, &start);
        signal(SIGUSR1, on_usr1);
        printf("ready\n");
        fflush(stdout);
        for (long i = 0;; i++) {
            work(i);
            usleep(1000);
            if (usr1) {
                usr1 = 0;
                cpu_set_t now, want;
                sched_getaffinity(0, sizeof now, &now);
                int pick = -1;
                for (int c = 0; c < CPU_SETSIZE && pick < 0; c++)
                    if (CPU_ISSET(c, &start) && !(CPU_COUNT(&now) == 1 && CPU_ISSET(c, &now)))
                        pick = c;
                for (int c = 0; c < CPU_SETSIZE && pick < 0; c++)
                    if (CPU_ISSET(c, &start))
                        pick = c;
                CPU_ZERO(&want);
                CPU_SET(pick, &want);
                sched_setaffinity(0, sizeof want, &want);
                printf("set %d\n", pick);
                fflush(stdout);
            }
        }
    } else if (!strcmp(mode, "lines")) {
        /* For each line N of stdin, work() N times and print the running total; at EOF
         * print "done" and exit 0. Hits happen only when the test says. */
        char buf[64];
        long s = 0;
        printf("ready\n");
        fflush(stdout);
        while (fgets(buf, sizeof buf, stdin)) {
            long m = atol(buf);
            for (long i = 0; i < m; i++)
                s += work(i);
            printf("work calls: %ld sum: %ld\n", work_calls, s);
            fflush(stdout);
        }
        printf("done\n");
    } else if (!strcmp(mode, "selfstep")) {
        /* With its own trap flag set, call kind_KIND (argv[2]) argv[3] times: count the
         * single-step traps, and those whose address is outside this program's text. */
        long (*f)(long) = !strcmp(argv[2], "emulated") ? kind_emulated
                          : !strcmp(argv[2], "boosted") ? kind_boosted
                          : !strcmp(argv[2], "riprel")  ? kind_riprel
                                                        : kind_step;
        long m = argc > 3 ? atol(argv[3]) : 10, s = 0;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_step;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGTRAP, &sa, NULL);
        __asm__ volatile("pushf\n\torl $0x100, (%%rsp)\n\tpopf" ::: "memory", "cc");
        for (long i = 0; i < m; i++)
            s += f(i);
        __asm__ volatile("pushf\n\tandl $~0x100, (%%rsp)\n\tpopf" ::: "memory", "cc");
        printf("steps: %ld foreign: %ld other traps: %ld sum: %ld\n", steps, foreign, others, s);
    } else if (!strcmp(mode, "selfkill")) {
        for (long i = 0; i < n; i++)
            work(i);
        printf("work calls: %ld\n", work_calls);
        fflush(stdout);
        kill(getpid(), SIGKILL);
    } else if (!strcmp(mode, "one")) {
        long (*f)(long) = !strcmp(argv[2], "emulated") ? kind_emulated
                          : !strcmp(argv[2], "boosted") ? kind_boosted
                          : !strcmp(argv[2], "riprel")  ? kind_riprel
                                                        : kind_step;
        long m = argc > 3 ? atol(argv[3]) : 10, s = 0;
        for (long i = 0; i < m; i++)
            s += f(i);
        return s == 0;
    } else if (!strcmp(mode, "threxec")) {
        start_forever_threads();
        usleep(n * 1000);
        execl("/proc/self/exe", argv[0], "calls", "10", (char *)NULL);
        return 1;
    } else if (!strcmp(mode, "threxit")) {
        start_forever_threads();
        usleep(n * 1000);
        printf("exiting\n");
        fflush(stdout);
        exit(5);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
