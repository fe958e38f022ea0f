/* A program that uses ptrace itself, and forks children that call probed code (issue 13,
 * item 8, `--no-follow`). Every mode calls work() N times in the parent and N times in a
 * forked child, then prints what it did and exits 0 if the ptrace calls worked.
 *   traceme N   the child calls ptrace(PTRACE_TRACEME) and stops itself; the parent sees the
 *               stop, resumes it and reaps it (as a debugger's "run" or a crash handler does)
 *   attach N    the parent attaches to its running child with PTRACE_ATTACH
 *   plain N     no ptrace: the child just calls work() and exits
 *   vfork       the child is started with vfork() and execs /bin/true */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long worked;

__attribute__((noinline)) long work(long x) {
    worked++;
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

static long calls(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += work(i);
    return s;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "plain";
    long n = argc > 2 ? atol(argv[2]) : 10;
    int pipefd[2];
    if (!strcmp(mode, "vfork")) {
        pid_t c = vfork();
        if (c == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int st = 0;
        waitpid(c, &st, 0);
        long s = calls(n);
        printf("vfork child exit %d sum %ld\n", WEXITSTATUS(st), s);
        return WEXITSTATUS(st);
    }
    if (pipe(pipefd))
        return 2;
    pid_t child = fork();
    if (child < 0)
        return 2;
    if (child == 0) {
        close(pipefd[0]);
        if (!strcmp(mode, "traceme")) {
            if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) {
                printf("child: PTRACE_TRACEME failed: %s\n", strerror(errno));
                fflush(stdout);
                _exit(1);
            }
            raise(SIGSTOP);
        }
        long s = calls(n);
        if (!strcmp(mode, "attach")) {
            /* Tell the parent we run, then wait to be attached and released. */
            if (write(pipefd[1], "r", 1) != 1)
                _exit(3);
            pause();
        }
        _exit(s == n * (n + 1) / 2 ? 0 : 4);
    }
    close(pipefd[1]);
    int ok = 1, st = 0;
    if (!strcmp(mode, "traceme")) {
        if (waitpid(child, &st, 0) != child || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP) {
            ok = 0;
        } else if (ptrace(PTRACE_CONT, child, NULL, NULL) != 0) {
            printf("parent: PTRACE_CONT failed: %s\n", strerror(errno));
            ok = 0;
        }
    } else if (!strcmp(mode, "attach")) {
        char c;
        if (read(pipefd[0], &c, 1) != 1)
            return 2;
        if (ptrace(PTRACE_ATTACH, child, NULL, NULL) != 0) {
            printf("parent: PTRACE_ATTACH failed: %s\n", strerror(errno));
            ok = 0;
        } else if (waitpid(child, &st, 0) != child || !WIFSTOPPED(st)) {
            ok = 0;
        } else {
            ptrace(PTRACE_DETACH, child, NULL, NULL);
        }
        kill(child, SIGTERM);
    }
    waitpid(child, &st, 0);
    long s = calls(n);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    printf("%s: ptrace %s, child status %d, sum %ld\n", mode, ok ? "ok" : "failed", code, s);
    return ok ? 0 : 1;
}
