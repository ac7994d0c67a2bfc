// Publishes an OTEP 4719 process context and OTEP 4947 thread contexts, then spins in spans:
//   ctx_main SECONDS [LIBRARY]
// With LIBRARY, ctx_set comes from dlopen(LIBRARY); otherwise it is linked in (from the
// executable itself or from a shared library). Three threads each run spans one after another;
// span k of thread t has trace_id = {0x7e, t, k, pid..., 1}, span_id = {0x5b, t, k, ...}. During
// even spans a thread spins in spin_even, during odd ones in spin_odd, and between spans (no
// context) in outside_span, so a test can check every sample's link against its stack.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

__attribute__((weak)) void ctx_set(void *record);
static void (*set_ctx)(void *) = NULL;

struct record {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t valid;
    uint8_t trace_flags;
    uint16_t attrs_size;
    uint8_t attrs[64];
} __attribute__((packed, aligned(8)));

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

volatile uint64_t sink;
__attribute__((noinline)) void spin_even(double until) { while (now() < until) sink++; }
__attribute__((noinline)) void spin_odd(double until) { while (now() < until) sink++; }
__attribute__((noinline)) void outside_span(double until) { while (now() < until) sink++; }

static double deadline;

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    static __thread struct record rec;
    for (int k = 0; now() < deadline; k = (k + 1) % 250) {
        memset(&rec, 0, sizeof rec);
        rec.trace_id[0] = 0x7e;
        rec.trace_id[1] = (uint8_t)t;
        rec.trace_id[2] = (uint8_t)k;
        uint32_t pid = (uint32_t)getpid();
        memcpy(&rec.trace_id[3], &pid, 4);
        rec.trace_id[15] = 1;
        rec.span_id[0] = 0x5b;
        rec.span_id[1] = (uint8_t)t;
        rec.span_id[2] = (uint8_t)k;
        rec.span_id[7] = 1;
        rec.trace_flags = 1;
        char route[16], worker_name[16];
        int rl = snprintf(route, sizeof route, "/r/%d", k);
        int wl = snprintf(worker_name, sizeof worker_name, "w%d", t);
        uint8_t *a = rec.attrs;
        *a++ = 0; *a++ = (uint8_t)rl; memcpy(a, route, rl); a += rl;
        *a++ = 1; *a++ = (uint8_t)wl; memcpy(a, worker_name, wl); a += wl;
        rec.attrs_size = (uint16_t)(a - rec.attrs);
        rec.valid = 1;
        set_ctx(&rec);
        double end = now() + 0.02;
        if (k % 2 == 0) spin_even(end); else spin_odd(end);
        set_ctx(NULL);
        outside_span(now() + 0.01);
    }
    return NULL;
}

// --- A minimal protobuf encoder for opentelemetry.proto.resource.v1.Resource. ---
static uint8_t *varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}
static uint8_t *bytes_field(uint8_t *p, int field, const void *data, size_t n) {
    p = varint(p, (uint64_t)field << 3 | 2);
    p = varint(p, n);
    memcpy(p, data, n);
    return p + n;
}
// AnyValue{string_value}
static size_t any_string(uint8_t *out, const char *s) { return bytes_field(out, 1, s, strlen(s)) - out; }
static uint8_t *kv_string(uint8_t *p, const char *key, const char *value) {
    uint8_t kv[512], any[256];
    size_t an = any_string(any, value);
    uint8_t *q = bytes_field(kv, 1, key, strlen(key));
    q = bytes_field(q, 2, any, an);
    return bytes_field(p, 1, kv, q - kv);
}
static uint8_t *kv_string_array(uint8_t *p, const char *key, const char **values, int n) {
    uint8_t arr[512], any[600], kv[700], *q = arr;
    for (int i = 0; i < n; i++) {
        uint8_t one[128];
        size_t on = any_string(one, values[i]);
        q = bytes_field(q, 1, one, on); // ArrayValue.values
    }
    size_t an = bytes_field(any, 5, arr, q - arr) - any; // AnyValue.array_value
    uint8_t *k = bytes_field(kv, 1, key, strlen(key));
    k = bytes_field(k, 2, any, an);
    return bytes_field(p, 1, kv, k - kv);
}

static void publish_process_context(void) {
    static uint8_t payload[2048];
    char service[64], instance[64];
    snprintf(service, sizeof service, "ctx-writer");
    snprintf(instance, sizeof instance, "instance-%d", getpid());
    const char *keys[] = {"http.route", "worker"};
    uint8_t *p = payload;
    p = kv_string(p, "service.name", service);
    p = kv_string(p, "service.instance.id", instance);
    p = kv_string(p, "deployment.environment.name", "otep-test");
    p = kv_string(p, "threadlocal.schema_version", "tls_v1");
    p = kv_string_array(p, "threadlocal.attribute_key_map", keys, 2);

    int fd = memfd_create("OTEL_CTX", MFD_CLOEXEC);
    uint8_t *h;
    if (fd >= 0) {
        if (ftruncate(fd, 4096) != 0) { perror("ftruncate"); exit(1); }
        h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    } else {
        h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (h == MAP_FAILED) { perror("mmap"); exit(1); }
    madvise(h, 4096, MADV_DONTFORK);
    uint32_t version = 2, size = (uint32_t)(p - payload);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
    uint64_t ptr = (uint64_t)(uintptr_t)payload;
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &size, 4);
    memcpy(h + 16, &at, 8);
    memcpy(h + 24, &ptr, 8);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(h, "OTEL_CTX", 8);
    prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)h, 4096, (unsigned long)"OTEL_CTX");
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    if (argc > 2) {
        void *lib = dlopen(argv[2], RTLD_NOW);
        if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
        set_ctx = (void (*)(void *))dlsym(lib, "ctx_set");
        if (!set_ctx) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 1; }
    } else {
        set_ctx = ctx_set;
    }
    if (!set_ctx) { fprintf(stderr, "ctx_set is not linked in\n"); return 2; }
    publish_process_context();
    // Requests start a little after SDK initialisation, as in a service: a profiler that sees
    // the process start picks its context up meanwhile.
    usleep(600000);
    deadline = now() + seconds;
    pthread_t th[3];
    for (int t = 0; t < 3; t++) pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < 3; t++) pthread_join(th[t], NULL);
    return 0;
}
