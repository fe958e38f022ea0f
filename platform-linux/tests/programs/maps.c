/* Programs that change their own mappings under a tracer (issue 12, items 7 and 11).
 *
 *   maps remap N M [rx] N calls of iso_fn; then maps read-write-exec memory filled with ud2
 *                       (MAP_FIXED) over the one anonymous r-x mapping it did not make (the
 *                       tracer's slot area), with "rx" made read-exec again; M calls more.
 *                       Exit 3 if there was no such mapping.
 *   maps mprotect N M LIB
 *                       N calls; iso_fn's page made read-only, LIB dlopen'ed (the dynamic
 *                       linker's hook makes a tracer read the maps while it is so), the page
 *                       made executable again, LIB dlclose'd; M calls; then waits forever.
 *   maps loader N M     N calls; maps iso_fn's page of its own file a second time, read-only,
 *                       and makes it executable (a loader's mmap + mprotect, no dynamic
 *                       linker); one call of the original, then M calls of the copy; then
 *                       waits forever.
 *
 * The waiting modes call done_fn once first. Every mode checks the sum of the results and
 * exits 1 if it is wrong, 0 otherwise.
 * iso_fn sits alone in a page-aligned page: imul is boosted (it needs a slot). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

long iso_fn(long x);
__asm__(".section .text.iso,\"ax\",@progbits\n"
        ".balign 4096\n"
        ".globl iso_fn\n"
        ".type iso_fn,@function\n"
        "iso_fn:\n"
        "    imul $3, %rdi, %rax\n"
        "    add $1, %rax\n"
        "    ret\n"
        ".size iso_fn, .-iso_fn\n"
        ".balign 4096\n"
        ".text\n");

#define PAGE 4096UL

static long expect(long from, long to) {
    long s = 0;
    for (long i = from; i < to; i++)
        s += 3 * i + 1;
    return s;
}

static long calls(long (*f)(long), long from, long to) {
    long s = 0;
    for (long i = from; i < to; i++)
        s += f(i);
    return s;
}

/* The one anonymous r-x mapping: not ours, so the tracer's. */
static int find_foreign_exec(uintptr_t *start, uintptr_t *end) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b, off, ino;
        char perms[5], dev[16];
        int n = 0;
        if (sscanf(line, "%lx-%lx %4s %lx %15s %lu %n", &a, &b, perms, &off, dev, &ino, &n) < 6)
            continue;
        if (strcmp(perms, "r-xp") || ino != 0 || (line[n] != '\0' && line[n] != '\n'))
            continue;
        *start = a;
        *end = b;
        found = 1;
    }
    if (f)
        fclose(f);
    return found;
}

/* The file offset and address of iso_fn's page in our own mapping. */
static int iso_page(off_t *offset) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t fn = (uintptr_t)iso_fn;
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b, off;
        if (sscanf(line, "%lx-%lx %*s %lx", &a, &b, &off) == 3 && a <= fn && fn < b) {
            *offset = off + (fn - a);
            found = 1;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* Called once when the work is done: a tracer waits for its hit. */
__attribute__((noinline)) void done_fn(void) { __asm__ volatile("" ::: "memory"); }

static void wait_forever(void) {
    done_fn();
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "remap";
    long n = argc > 2 ? atol(argv[2]) : 10, m = argc > 3 ? atol(argv[3]) : 10;
    long sum = calls(iso_fn, 0, n);
    if (!strcmp(mode, "remap")) {
        uintptr_t a, b;
        if (!find_foreign_exec(&a, &b))
            return 3;
        void *p = mmap((void *)a, b - a, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED)
            return 4;
        for (size_t i = 0; i + 1 < b - a; i += 2)
            memcpy((char *)p + i, "\x0f\x0b", 2); /* ud2 */
        /* "rx": read-exec again, as the area was (its page counts look unchanged). */
        if (argc > 4 && !strcmp(argv[4], "rx") && mprotect(p, b - a, PROT_READ | PROT_EXEC))
            return 4;
        sum += calls(iso_fn, n, n + m);
        printf("%ld\n", sum);
        return sum == expect(0, n + m) ? 0 : 1;
    } else if (!strcmp(mode, "mprotect")) {
        void *page = (void *)((uintptr_t)iso_fn & ~(PAGE - 1));
        if (mprotect(page, PAGE, PROT_READ))
            return 4;
        void *h = dlopen(argc > 4 ? argv[4] : "libm.so.6", RTLD_NOW);
        if (!h)
            return 5;
        if (mprotect(page, PAGE, PROT_READ | PROT_EXEC))
            return 4;
        dlclose(h);
        sum += calls(iso_fn, n, n + m);
        if (sum != expect(0, n + m))
            return 1;
        wait_forever();
    } else if (!strcmp(mode, "loader")) {
        off_t off;
        if (!iso_page(&off))
            return 4;
        int fd = open("/proc/self/exe", O_RDONLY);
        char *copy = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, off & ~(off_t)(PAGE - 1));
        if (fd < 0 || copy == MAP_FAILED || mprotect(copy, PAGE, PROT_READ | PROT_EXEC))
            return 4;
        close(fd);
        long (*f)(long) = (long (*)(long))(copy + ((uintptr_t)iso_fn & (PAGE - 1)));
        sum += iso_fn(n);
        sum += calls(f, n + 1, n + 1 + m);
        if (sum != expect(0, n + 1 + m))
            return 1;
        wait_forever();
    }
    return 2;
}
