// Inlined hot code for otelprof's tests: inlined_hot is always inlined into outer_inline (GCC
// inlines always_inline functions even at -O0), so its samples must come back as one location
// with two lines: inlined_hot (inlined) inside outer_inline.
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline __attribute__((always_inline)) void inlined_hot(void) {
    for (unsigned long i = 0; i < 200000; i++) sink += i * 3;
}

__attribute__((noinline)) void outer_inline(void) {
    inlined_hot();
}

int main(int argc, char **argv) {
    double end = now() + (argc > 1 ? atof(argv[1]) : 1.0);
    while (now() < end) outer_inline();
    return 0;
}
