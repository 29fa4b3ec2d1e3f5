"""Where and in what precision the model runs."""

from __future__ import annotations

import contextlib

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
