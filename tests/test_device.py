import os
import subprocess
import sys

import torch

from deepfake_cli.device import CPU_BF16_MIN_IMAGE_SIZE, resolve_amp

CPU = torch.device("cpu")


def test_cpu_inference_stays_full_precision():
    assert resolve_amp("auto", CPU) is None  # reproduces reference probabilities exactly


def test_cpu_training_uses_bf16_only_for_large_crops_on_native_bf16_cpus():
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_amp("auto", CPU, 64) is None
    assert resolve_amp("auto", CPU, CPU_BF16_MIN_IMAGE_SIZE) == (torch.bfloat16 if native else None)


def test_explicit_modes_win():
    assert resolve_amp("off", CPU, 256) is None
    assert resolve_amp("bf16", CPU) == torch.bfloat16


def test_asking_for_a_missing_gpu_is_one_clear_line(extracted, tmp_path):
    """Run with the GPUs hidden, so the error path runs on GPU machines too."""
    command = [sys.executable, "-m", "deepfake_cli", "train", str(extracted), "--run-dir", str(tmp_path / "r"),
               "--device", "cuda"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and "--device cuda: no CUDA GPU is visible; use --device cpu" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()
