// Signal frames for otelprof's unwinding tests: a SIGPROF timer interrupts main_spin every 10 ms
// and on_signal spins in handler_spin for ~5 ms, so about half the samples are inside a signal
// handler and must unwind through __restore_rt back to main. Built -O2 -fomit-frame-pointer.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

volatile unsigned long sig_sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void handler_spin(void) {
    double end = now() + 0.005;
    while (now() < end) sig_sink++;
}

__attribute__((noinline)) void on_signal(int sig) {
    handler_spin();
    sig_sink += (unsigned long)sig;
}

__attribute__((noinline)) void main_spin(double seconds) {
    double end = now() + seconds;
    while (now() < end) sig_sink += 3;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval t = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_PROF, &t, NULL);
    main_spin(argc > 1 ? atof(argv[1]) : 2.0);
    return 0;
}
