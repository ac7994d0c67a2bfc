// A pool of named threads for otelprof's tests: thread i is named "worker-i" and spins in
// worker_spin for argv[1] seconds. Prints "tid name" per worker on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 3
static double secs = 2.0;
volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void worker_spin(void) {
    for (unsigned long i = 0; i < 100000; i++) sink += i ^ (i >> 3);
}

static void *worker(void *arg) {
    char name[16];
    snprintf(name, sizeof name, "worker-%ld", (long)arg);
    pthread_setname_np(pthread_self(), name);
    printf("%ld %s\n", (long)syscall(SYS_gettid), name);
    fflush(stdout);
    double end = now() + secs;
    while (now() < end) worker_spin();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) secs = atof(argv[1]);
    pthread_t t[WORKERS];
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);
    return 0;
}
