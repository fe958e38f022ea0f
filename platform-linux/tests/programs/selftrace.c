/* A program that uses ptrace itself, as debuggers and sanitizers do.
 *
 *   selftrace traceme   fork; the child asks to be traced by its parent
 *                       (PTRACE_TRACEME) and exits; prints "traceme: ok" or the error
 *   selftrace seize     fork a child that waits on a pipe; seize it (PTRACE_SEIZE), detach;
 *                       prints "seize: ok" or the error
 *
 * Both call work() once first, a function the tests probe; exit status 0 either way. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long counter;

__attribute__((noinline)) long work(long x) {
    counter += x;
    return counter;
}

static int traceme(void) {
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
        int err = r == -1 ? errno : 0;
        if (write(fds[1], &err, sizeof err) != sizeof err)
            _exit(2);
        _exit(0);
    }
    int err = -1;
    if (read(fds[0], &err, sizeof err) != sizeof err)
        return 1;
    int status;
    waitpid(child, &status, 0);
    printf("traceme: %s\n", err == 0 ? "ok" : strerror(err));
    return 0;
}

static int seize(void) {
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(fds[1]);
        while (read(fds[0], &c, 1) == -1 && errno == EINTR) {
        }
        _exit(0);
    }
    close(fds[0]);
    long r = ptrace(PTRACE_SEIZE, child, 0, 0);
    int err = r == -1 ? errno : 0;
    if (r == 0)
        ptrace(PTRACE_DETACH, child, 0, 0);
    close(fds[1]);
    int status;
    waitpid(child, &status, 0);
    printf("seize: %s\n", err == 0 ? "ok" : strerror(err));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    work(1);
    if (argc > 1 && strcmp(argv[1], "traceme") == 0)
        return traceme();
    if (argc > 1 && strcmp(argv[1], "seize") == 0)
        return seize();
    fprintf(stderr, "usage: selftrace traceme|seize\n");
    return 64;
}
