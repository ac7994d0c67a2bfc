// Frame-pointer-less chain for otelprof's unwinding tests: a -> b -> rec(40) -> hot_leaf, built
// with -O2 -fomit-frame-pointer into an executable or a shared library. The volatile work after
// each recursive call keeps GCC from turning the recursion into a loop.
#include <time.h>

volatile unsigned long deep_sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long hot_leaf(void) {
    unsigned long h = 0;
    for (unsigned long i = 0; i < 20000; i++) h = h * 31 + i;
    return h;
}

__attribute__((noinline)) unsigned long rec(int d) {
    if (d == 0) return hot_leaf();
    unsigned long r = rec(d - 1);
    deep_sink ^= r + (unsigned long)d;
    return r + deep_sink;
}

__attribute__((noinline)) unsigned long b(void) {
    unsigned long r = rec(40);
    deep_sink += r;
    return r;
}

__attribute__((noinline)) unsigned long a(void) {
    unsigned long r = b();
    deep_sink += r;
    return r;
}

// Spins in a() for `seconds`.
__attribute__((noinline)) void run(double seconds) {
    double end = now() + seconds;
    while (now() < end) a();
}
