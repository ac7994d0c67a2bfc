/* The OTEP 4947 thread-local, and the one function that writes it. */
#include <stddef.h>

__attribute__((visibility("default"))) __thread void *otel_thread_ctx_v1;

void otel_context_writer_set(void *record) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    *(void *volatile *)&otel_thread_ctx_v1 = record;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
