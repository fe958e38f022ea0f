/* A small library for the dlopen test: plugin_fn is probed before the library is loaded. */
__attribute__((noinline)) long plugin_fn(long x) {
    __asm__ volatile("" ::: "memory");
    return x + 7;
}
