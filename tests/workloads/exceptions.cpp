// C++ exceptions through frame-pointer-less code: every round throws from the bottom of a
// recursion and catches it in the middle, so the unwinder meets code with landing pads and the
// personality routine's frames (libstdc++, libgcc_s).
// Usage: exceptions SECONDS
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

volatile long sink;

__attribute__((noinline)) long hot_leaf(long n) {
    long a = 0;
    for (long i = 0; i < 20000; i++) a += (i ^ n) * 3;
    return a;
}

__attribute__((noinline)) long thrower(long depth) {
    if (depth == 0) {
        sink += hot_leaf(depth);
        throw std::runtime_error("bottom " + std::to_string(sink & 7));
    }
    return thrower(depth - 1) + 1;
}

__attribute__((noinline)) long catcher(long depth) {
    try {
        return thrower(depth);
    } catch (const std::exception &e) {
        return hot_leaf(static_cast<long>(e.what()[0]));
    }
}

__attribute__((noinline)) long rounds(double seconds) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    long n = 0;
    while (std::chrono::steady_clock::now() < end) n += catcher(20);
    return n;
}

int main(int argc, char **argv) {
    sink = rounds(argc > 1 ? std::atof(argv[1]) : 2.0);
    return 0;
}
