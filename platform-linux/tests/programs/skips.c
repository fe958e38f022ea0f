/* Functions whose entries probe must skip, each for a known reason, beside ones it probes
 * (issue 13, item 1), and a known number of mallocs:
 *
 *   skips calls N     ok_one and ok_two N times each (the skip_* functions never run)
 *   skips mallocs N   N malloc/free pairs, then prints N with write(2) (no stdio: no
 *                     malloc of libc's own)
 *
 * Built with -DMANY it also has 140 000 small functions many_0 .. many_139999 (never
 * called), more than a process's slot area holds, to fill the tracer's tables.
 *
 * The skip_* functions (never called):
 *   skip_int3, skip_ud2   start with a trap instruction
 *   skip_hlt              starts with a privileged instruction
 *   skip_inb              starts with port I/O
 *   skip_syscall          starts with a system call
 *   skip_inner            starts inside skip_outer's first instruction (a 10-byte movabs)
 *   skip_data             a function symbol in .data */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__asm__(".pushsection .text\n"
        ".globl skip_int3\n .type skip_int3,@function\nskip_int3: int3\n ret\n .size skip_int3,.-skip_int3\n"
        ".globl skip_ud2\n .type skip_ud2,@function\nskip_ud2: ud2\n .size skip_ud2,.-skip_ud2\n"
        ".globl skip_hlt\n .type skip_hlt,@function\nskip_hlt: hlt\n ret\n .size skip_hlt,.-skip_hlt\n"
        ".globl skip_inb\n .type skip_inb,@function\nskip_inb: inb %dx, %al\n ret\n .size skip_inb,.-skip_inb\n"
        ".globl skip_syscall\n .type skip_syscall,@function\nskip_syscall: syscall\n ret\n .size skip_syscall,.-skip_syscall\n"
        ".globl skip_outer\n .type skip_outer,@function\nskip_outer: movabs $0x1122334455667788, %rax\n ret\n .size skip_outer,.-skip_outer\n"
        ".globl skip_inner\n .type skip_inner,@function\n .set skip_inner, skip_outer + 2\n .size skip_inner, 9\n"
        ".popsection\n"
        ".pushsection .data\n"
        ".globl skip_data\n .type skip_data,@function\nskip_data: .quad 0x90909090c3c3c3c3\n .size skip_data,8\n"
        ".popsection\n");

#ifdef MANY
__asm__(".pushsection .text\n"
        ".altmacro\n"
        ".macro manyfn n\n"
        " .globl many_\\n\n .type many_\\n,@function\nmany_\\n: push %rbp\n pop %rbp\n ret\n .size many_\\n,.-many_\\n\n"
        ".endm\n"
        ".set i, 0\n"
        ".rept 140000\n manyfn %i\n .set i, i+1\n.endr\n"
        ".noaltmacro\n"
        ".popsection\n");
#endif

__attribute__((noinline)) long ok_one(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

__attribute__((noinline)) long ok_two(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 3;
}

static void put_number(long n) {
    char buf[32];
    int i = sizeof buf;
    buf[--i] = '\n';
    do {
        buf[--i] = '0' + n % 10;
        n /= 10;
    } while (n);
    (void)!write(1, buf + i, sizeof buf - i);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "calls";
    long n = argc > 2 ? atol(argv[2]) : 10;
    long sum = 0;
    if (!strcmp(mode, "mallocs")) {
        for (long i = 0; i < n; i++) {
            char *volatile p = malloc(16 + i % 64);
            p[0] = (char)i;
            sum += p[0] != 0;
            free(p);
        }
        put_number(n);
        return 0;
    }
    for (long i = 0; i < n; i++)
        sum += ok_one(i) + ok_two(i);
    put_number(sum);
    return 0;
}
