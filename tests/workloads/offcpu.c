// Off-CPU workload: a thread ("sleeper") that, for SECONDS (default 3), repeats 3 ms of spinning
// in spin_phase() and 7 ms of nanosleep() in sleep_phase(): 70 % off CPU, 30 % on.
//
// At the end it prints what it measured itself, for the test to compare with otelprof:
//   slept_ns N      total wall time spent inside nanosleep() (CLOCK_MONOTONIC around each call)
//   sleeps N        nanosleep() calls
//   tid N           the sleeper's thread ID
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double seconds = 3.0;
static uint64_t slept_ns, sleeps;
static pid_t sleeper_tid;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) static uint64_t spin_phase(uint64_t until) {
    volatile uint64_t x = 0;
    while (now_ns() < until) {
        for (int i = 0; i < 1000; i++) x += i;
    }
    return x;
}

__attribute__((noinline)) static void sleep_phase(void) {
    struct timespec ts = {0, 7 * 1000 * 1000};
    uint64_t t0 = now_ns();
    nanosleep(&ts, NULL);
    slept_ns += now_ns() - t0;
    sleeps++;
}

static void *sleeper(void *arg) {
    (void)arg;
    sleeper_tid = gettid();
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end) {
        spin_phase(now_ns() + 3 * 1000 * 1000);
        sleep_phase();
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) seconds = atof(argv[1]);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    pthread_setname_np(t, "sleeper");
    pthread_join(t, NULL);
    printf("slept_ns %llu\nsleeps %llu\ntid %d\n", (unsigned long long)slept_ns, (unsigned long long)sleeps,
           sleeper_tid);
    return 0;
}
