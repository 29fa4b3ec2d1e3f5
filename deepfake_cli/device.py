"""Where and in what precision the model runs."""

from __future__ import annotations

import contextlib

import torch

from deepfake_cli.errors import DeepfakeError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepfakeError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on GPUs that have it, fp16 on older ones; off on CPU.

    CPU bf16 autocast is opt-in (--amp bf16): whether it pays depends on the CPU and the crop
    size (see benchmarks/bench_train.py); fp32 is the safe default.
    """
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision where asked for; a no-op context otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
