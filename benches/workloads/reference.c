// The reference workload of otelprof's overhead benchmark (cargo xtask bench).
//
//   reference work ITERATIONS [THREADS [DEPTH]]
//                                         fixed CPU work: every thread runs ITERATIONS rounds of a
//                                         DEPTH-deep (default 32) call chain ending in FNV-1a over
//                                         4 KiB; prints "elapsed SECONDS" (wall time of the run)
//   reference light SECONDS [DUTY]        a DUTY share of a CPU (default 0.1) in 20 ms periods,
//                                         for SECONDS
//   reference pingpong SECONDS            two threads passing one byte back and forth through
//                                         two pipes for SECONDS: two context switches per
//                                         round trip; prints "round_trips N"
//
// Built with frame pointers so that perf -g and otelprof's frame-pointer unwinding see the chain.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

__attribute__((noinline)) static uint64_t chain(int depth, const unsigned char *buf, uint64_t h) {
    if (depth == 0) return fnv(buf, 4096, h);
    uint64_t r = chain(depth - 1, buf, h + depth);
    __asm__ volatile("" ::: "memory");
    return r;
}

static long iterations;
static int depth = 32;

static void *worker(void *arg) {
    unsigned char buf[4096];
    memset(buf, (int)(long)arg, sizeof buf);
    uint64_t h = 1469598103934665603ULL;
    for (long i = 0; i < iterations; i++) h = chain(depth, buf, h);
    return (void *)(uintptr_t)h;
}

static int ping[2], pong[2];

static void *ponger(void *arg) {
    (void)arg;
    char c;
    while (read(ping[0], &c, 1) == 1) {
        if (write(pong[1], &c, 1) != 1) break;
    }
    return NULL;
}

static int pingpong(double seconds) {
    if (pipe(ping) != 0 || pipe(pong) != 0) return 1;
    pthread_t t;
    pthread_create(&t, NULL, ponger, NULL);
    double end = now() + seconds;
    long rounds = 0;
    char c = 'x';
    while (now() < end) {
        for (int i = 0; i < 100; i++, rounds++) {
            if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1) return 1;
        }
    }
    close(ping[1]);
    pthread_join(t, NULL);
    printf("round_trips %ld\n", rounds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "pingpong") == 0) return pingpong(atof(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "light") == 0) {
        double end = now() + atof(argv[2]);
        double duty = argc > 3 ? atof(argv[3]) : 0.1;
        unsigned char buf[4096] = {1};
        uint64_t h = 0;
        while (now() < end) {
            double burst = now() + 0.020 * duty;
            do h = chain(32, buf, h); while (now() < burst);
            usleep((useconds_t)(20000 * (1.0 - duty)));
        }
        return (int)(h & 0);
    }
    if (argc < 3 || strcmp(argv[1], "work") != 0) {
        fprintf(stderr, "usage: reference work ITERATIONS [THREADS] | reference light SECONDS | reference pingpong SECONDS\n");
        return 2;
    }
    iterations = atol(argv[2]);
    long threads = argc > 3 ? atol(argv[3]) : sysconf(_SC_NPROCESSORS_ONLN);
    if (argc > 4) depth = atoi(argv[4]);
    pthread_t t[256];
    if (threads > 256) threads = 256;
    double start = now();
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (long i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("elapsed %.6f\n", now() - start);
    return 0;
}
