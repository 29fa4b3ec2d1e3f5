"""Where and in what precision the model runs."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform

import torch

from deepfake_cli.errors import DeepfakeError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`--device` for the process with this `local_rank`: `auto` and a bare `cuda` mean its own GPU
    (one per process under torchrun); `cuda:N` is that GPU whatever the rank."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepfakeError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeepfakeError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


# Measured on an AVX-512 BF16 CPU (benchmarks/bench_train.py and a sweep), a training step in
# bf16 against fp32: 0.60x at 64 px, 0.76x at 128, 0.96x at 192, 1.26x at 256.
CPU_BF16_MIN_IMAGE_SIZE = 224


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), as oneDNN sees it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(mode: str, device: torch.device, image_size: int | None = None) -> torch.dtype | None:
    """The autocast dtype for `--amp`; None for full precision.

    auto: on GPU, bf16 where supported, else fp16. On CPU, bf16 only for training
    (`image_size` given) on crops large enough for it to pay, on CPUs with native bf16;
    inference on CPU stays fp32, so it reproduces reference probabilities exactly.
    """
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        native = cpu_has_native_bf16()
        return torch.bfloat16 if native and image_size and image_size >= CPU_BF16_MIN_IMAGE_SIZE else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision where asked for; a no-op context otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# glibc's mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
KEPT_TOP = 1 << 30  # freed memory at the top of the heap kept for the next step, in bytes


def sets_malloc(name: str) -> bool:
    """Whether the environment variable `name` tunes glibc's malloc (the user's choice, left as it is)."""
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a CPU pass frees, for the next pass to reuse.

    A training step allocates and frees the same few GB of activations; an inference pass, the same
    hundreds of MB. glibc serves each block over its mmap threshold (128 KB, rising to 32 MB at most)
    with a fresh mapping and unmaps it when freed, so every pass faults its activations in again, page
    by page, each page zeroed by the kernel: half of an fp32 training step at 256 px on 2 cores, a
    quarter to two fifths of the backbone's time at inference (docs/performance.md, "Memory the step
    frees" and "Memory an inference pass frees"). From the heap, never trimmed, they are reused as
    they are. The price: the process keeps its peak, plus fragmentation (up to 1.6x the peak resident
    memory in training). False where the C library is not glibc, or the user tuned malloc through
    the environment (`sets_malloc`).
    """
    if platform.libc_ver()[0] != "glibc" or any(map(sets_malloc, os.environ)):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    limit = 2**31 - 1  # mallopt takes a C int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, limit), (M_TOP_PAD, KEPT_TOP)))
