// The OTEP 4947 thread-local: the pointer profilers read. Built into the executable, or into a
// shared library (with -mtls-dialect=gnu2 for TLSDESC, or the traditional general-dynamic model).
#include <stddef.h>

__attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1;

// Points this thread's context at `record` (NULL: no active span). Compiler fences keep the record
// writes before the pointer write, as the OTEP asks; the reader interrupts this thread, so no CPU
// barrier is needed.
__attribute__((visibility("default"))) void ctx_set(void *record) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    *(void *volatile *)&otel_thread_ctx_v1 = record;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
