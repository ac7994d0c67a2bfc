// main for deep_lib.c: deep_main SECONDS (linked with deep_lib.c, or against libdeep.so).
#include <stdlib.h>

void run(double seconds);

int main(int argc, char **argv) {
    run(argc > 1 ? atof(argv[1]) : 2.0);
    return 0;
}
