// Spends its time in the vDSO: reads the clock in a loop, through a known chain.
// Usage: vdso [SECONDS=2]
// main -> read_clocks -> clock_gettime (glibc) -> __vdso_clock_gettime (kernel-provided code).
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

__attribute__((noinline)) void read_clocks(double seconds) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        clock_gettime(CLOCK_MONOTONIC, &now);
        sink++;
    } while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
}

int main(int argc, char **argv) {
    read_clocks(argc > 1 ? atof(argv[1]) : 2.0);
    __asm__ volatile("" ::: "memory");
    return 0;
}
