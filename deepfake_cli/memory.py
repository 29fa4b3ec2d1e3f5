"""What glibc's malloc does with the memory a process frees, where that costs time.

glibc hands large freed blocks back to the kernel (unmapping them, or trimming the heap's top),
and the next block of that size faults every page in again, each zeroed by the kernel. Two kinds
of work here free and reuse the same blocks over and over: decoding frames (`reuse_frame_memory`,
for extract) and torch on CPU training or scoring batches (`keep_freed_memory`). Both settings are
process-wide, so only processes of our own make them, and neither does anything where the C
library is not glibc or where the user tuned malloc through the environment (`sets_malloc`).
No torch here: extract's workers import this and must start light.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

# glibc's mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
KEPT_TOP = 1 << 30  # freed memory at the top of the heap kept for the next step, in bytes
C_INT_MAX = 2**31 - 1  # mallopt takes a C int


def sets_malloc(name: str) -> bool:
    """Whether the environment variable `name` tunes glibc's malloc (the user's choice, left as it is)."""
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def _mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    """Each (parameter, value) through glibc's mallopt; False, and nothing set, where the C library is not
    glibc or the user tuned malloc through the environment; else whether glibc took every one."""
    if platform.libc_ver()[0] != "glibc" or any(map(sets_malloc, os.environ)):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return all(mallopt(param, value) == 1 for param, value in settings)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a CPU pass of torch frees, for the next pass to reuse.

    A training step allocates and frees the same few GB of activations; an inference pass, the same
    hundreds of MB. glibc serves each block over its mmap threshold (128 KB, rising to 32 MB at most)
    with a fresh mapping and unmaps it when freed, so every pass faults its activations in again, page
    by page: half of an fp32 training step at 256 px on 2 cores, a quarter to two fifths of the
    backbone's time at inference (docs/performance.md, "Memory the step frees" and "Memory an
    inference pass frees"). From the heap, never trimmed, they are reused as they are. The price:
    the process keeps its peak, plus fragmentation (up to 1.6x the peak resident memory in training).
    Called by `train` on CPU and by `checkpoint.load_detector` for a CPU device.

    A process forked after that (a loader's workers) would share all the kept memory copy-on-write,
    and hold the old pages for as long as it lives while this process's next pass writes, and so
    copies, each of them: up to twice the memory. So before every fork the free memory goes back to
    the kernel (`malloc_trim`), and the pass after it faults that in once, as glibc's default would.
    """
    kept = _mallopt(((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, C_INT_MAX), (M_TOP_PAD, KEPT_TOP)))
    if kept:
        _trim_before_every_fork()
    return kept


@functools.cache  # one hook a process, however often the memory is kept
def _trim_before_every_fork() -> None:
    libc = ctypes.CDLL(None)
    os.register_at_fork(before=lambda: libc.malloc_trim(0))


def reuse_frame_memory() -> bool:
    """Keep freed frame-sized buffers in this process's heap, for the next frame to reuse.

    Every frame passes through several multi-megabyte arrays (decoded picture, BGR and RGB
    copies, MediaPipe's image). glibc's defaults hand such blocks back to the kernel soon after
    they are freed, and the next frame then page-faults its memory in afresh: two thirds of an
    extract worker's page faults, about 5% of its time. These limits keep up to 64 MB of
    freed memory, so the memory a process uses stays flat. Called by extract's workers and the
    `deepfake extract` command.
    """
    # mmap threshold at glibc's ceiling: blocks up to a 4K BGR frame come from the heap
    return _mallopt(((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20)))
