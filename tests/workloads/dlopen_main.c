// Loads a library after profiling started: dlopen_main LIBRARY SECONDS spins 0.3 s (so the
// profiler has sampled it, read its mappings and installed its tables before the library
// exists), then dlopen()s LIBRARY and spins in its run() for SECONDS.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

volatile unsigned long spun;

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 100000; i++) spun += i;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 300000000L);
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    void (*run)(double) = (void (*)(double))dlsym(lib, "run");
    if (!run) return 1;
    run(atof(argv[2]));
    return 0;
}
