// Loads a library after profiling started: dlopen_main LIBRARY SECONDS sleeps 0.3 s, then
// dlopen()s LIBRARY and spins in its run() for SECONDS.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    usleep(300000);
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
