/* C++ exceptions thrown through return-probed frames (issue 5): outer() calls catcher(),
 * which calls mid() -> thrower() -> throw; catcher() catches two levels up. Each round
 * also makes a normal call of leaf() from inside the catch block and a cleanup frame
 * (a destructor in mid()) so the unwinder runs both phases through probed frames.
 * `ret_exc N` runs N rounds and prints the sum of the caught values and the counts;
 * `ret_exc N rethrow` rethrows from an inner catch block too. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

static long destructed, caught, leaves;

struct Guard {
    ~Guard() { destructed++; }
};

extern "C" __attribute__((noinline)) long leaf(long x) {
    __asm__ volatile("" ::: "memory");
    leaves++;
    return x + 1;
}

extern "C" __attribute__((noinline)) long thrower(long x) {
    __asm__ volatile("" ::: "memory");
    if (x >= 0)
        throw std::runtime_error(std::to_string(x));
    return x;
}

static bool rethrow;

extern "C" __attribute__((noinline)) long mid(long x) {
    Guard g;
    if (rethrow) {
        try {
            return thrower(x) + 1;
        } catch (const std::runtime_error &) {
            throw;
        }
    }
    return thrower(x) + 1;
}

extern "C" __attribute__((noinline)) long catcher(long x) {
    try {
        return mid(x);
    } catch (const std::runtime_error &e) {
        caught++;
        return leaf(atol(e.what()));
    }
}

extern "C" __attribute__((noinline)) long outer(long x) {
    long r = catcher(x);
    __asm__ volatile("" ::: "memory");
    return r * 2;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    rethrow = argc > 2 && strcmp(argv[2], "rethrow") == 0;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += outer(i);
    printf("sum %ld caught %ld destructed %ld leaves %ld\n", sum, caught, destructed, leaves);
    return 7;
}
