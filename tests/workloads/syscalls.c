// A syscall-heavy loop for otelprof's tests: most CPU time is spent in the kernel on behalf of
// do_syscalls (reads of /dev/zero and getppid), so kernel frames must show up and be named.
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void do_syscalls(int fd) {
    for (int i = 0; i < 64; i++) {
        if (read(fd, buf, sizeof buf) < 0) abort();
        getppid();
    }
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) return 1;
    double end = now() + secs;
    while (now() < end) do_syscalls(fd);
    return 0;
}
