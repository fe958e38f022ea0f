/* C++ functions found by their demangled names (issue 13, item 9): `names N` calls
 * rp::deep(long), ns::Parser::parse(char const*) and ns::parse_line(char const*) N times
 * each, allocates N objects with `new` (operator new in libstdc++), and prints the sum. */
#include <cstdio>
#include <cstdlib>

namespace rp {
__attribute__((noinline)) long deep(long x) {
    __asm__ volatile("" ::: "memory");
    return x * 2 + 1;
}
} // namespace rp

namespace ns {
struct Parser {
    long base;
    __attribute__((noinline)) long parse(const char *s);
};

__attribute__((noinline)) long Parser::parse(const char *s) {
    __asm__ volatile("" ::: "memory");
    return base + std::atol(s);
}

__attribute__((noinline)) long parse_line(const char *s) {
    __asm__ volatile("" ::: "memory");
    return std::atol(s) + 1;
}
/* Keeps the compiler from eliding a new/delete pair (C++14 allows it). */
__attribute__((noinline)) long keep(long *cell) {
    __asm__ volatile("" : : "r"(cell) : "memory");
    return *cell;
}
} // namespace ns

int main(int argc, char **argv) {
    long n = argc > 1 ? std::atol(argv[1]) : 1;
    long sum = 0;
    ns::Parser p{3};
    for (long i = 0; i < n; i++) {
        long *cell = new long(i);
        sum += rp::deep(ns::keep(cell)) + p.parse("7") + ns::parse_line("5");
        delete cell;
    }
    std::printf("sum %ld\n", sum);
    return 0;
}
