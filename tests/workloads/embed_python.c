// A program embedding CPython through the shared libpython (Debian's libpython3.11.so, built
// without frame pointers, `.eh_frame` only): runs the script in argv[1].
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: embed_python SCRIPT\n");
        return 2;
    }
    Py_Initialize();
    FILE *f = fopen(argv[1], "r");
    if (f == NULL) {
        perror(argv[1]);
        return 1;
    }
    int rc = PyRun_SimpleFileEx(f, argv[1], 1);
    Py_Finalize();
    return rc == 0 ? 0 : 1;
}
