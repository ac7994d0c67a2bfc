// Symbolizer test input: inl_work is always inlined into outer_fn, so addresses of its loop
// must come back as two frames: inl_work (inlined, this file) inside outer_fn.
volatile unsigned long sink;

static inline __attribute__((always_inline)) void inl_work(unsigned long n) {
    for (unsigned long i = 0; i < n; i++) {
        sink += i * 7;  // INL_WORK_LINE
    }
}

__attribute__((noinline)) void outer_fn(unsigned long n) {
    inl_work(n);
    sink += 1;
}

int main(int argc, char **argv) {
    (void)argv;
    outer_fn((unsigned long)argc * 1000);
    return 0;
}
