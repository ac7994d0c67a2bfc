// The steady workload of `cargo xtask bench`'s churn section: two threads, each spinning for
// argv[1] seconds (default 10) in a call chain several functions deep
// (worker -> stage_a -> stage_b -> stage_c -> stage_d -> stage_e -> leaf). Built by the
// benchmark with -O2 -fomit-frame-pointer, so complete stacks need the `.eh_frame` unwind tables.
// noinline and the empty asm after each call keep every level a real frame (no tail calls).
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static double secs = 10.0;
volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static unsigned long leaf(unsigned long x) {
    for (unsigned long i = 0; i < 20000; i++) x = x * 6364136223846793005UL + i;
    return x;
}

#define STAGE(name, next)                                                                          \
    __attribute__((noinline)) static unsigned long name(unsigned long x) {                        \
        unsigned long r = next(x + 1);                                                             \
        __asm__ volatile("" ::: "memory");                                                         \
        return r;                                                                                  \
    }

STAGE(stage_e, leaf)
STAGE(stage_d, stage_e)
STAGE(stage_c, stage_d)
STAGE(stage_b, stage_c)
STAGE(stage_a, stage_b)

static void *worker(void *arg) {
    unsigned long x = (unsigned long)arg;
    double end = now() + secs;
    while (now() < end) x = stage_a(x);
    sink += x;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) secs = atof(argv[1]);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return 0;
}
