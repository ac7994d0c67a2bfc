// Known call chain for otelprof's tests: main -> outer -> middle -> hot_leaf.
// Usage: chain [SPIN_SECONDS=2] [EXIT_CODE=0] [SLEEP_AFTER_SECONDS=0]
// Spins first, then sleeps, then exits with EXIT_CODE. noinline keeps every level a real frame.
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void hot_leaf(void) {
    for (unsigned long i = 0; i < 200000; i++) sink += i * i;
}

__attribute__((noinline)) void middle(void) {
    hot_leaf();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void outer(void) {
    middle();
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int code = argc > 2 ? atoi(argv[2]) : 0;
    double sleep_after = argc > 3 ? atof(argv[3]) : 0.0;
    double end = now() + secs;
    while (now() < end) outer();
    if (sleep_after > 0) usleep((useconds_t)(sleep_after * 1e6));
    return code;
}
