# Allocation-heavy pure-Python work for the unwinding tests: integer arithmetic on growing values
# (CPython's long-integer helpers x_add / x_mul / long_normalize and its object allocator
# pymalloc allocate and free all the time) plus short-lived containers.
# Usage: alloc_heavy.py [SECONDS]  (or SECONDS in the environment, for embedding programs)
import os
import sys
import time


def grow(n):
    v = 1
    total = 0
    for i in range(n):
        v = v * 7 + i
        total += v
    return total


def churn(n):
    items = [(i, str(i), {"k": i}) for i in range(n)]
    return sum(len(s) for _, s, _ in items)


def work(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        grow(2000)
        churn(200)


if __name__ == "__main__":
    work(float(sys.argv[1]) if len(sys.argv) > 1 else float(os.environ.get("SECONDS", "3")))
