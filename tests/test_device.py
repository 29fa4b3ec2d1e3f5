import os
import subprocess
import sys

import pytest
import torch

from deepfake_cli import device
from deepfake_cli.device import CPU_BF16_MIN_IMAGE_SIZE, resolve_amp, resolve_device
from deepfake_cli.errors import DeepfakeError

CPU = torch.device("cpu")


def test_cpu_inference_stays_full_precision():
    assert resolve_amp("auto", CPU) is None  # reproduces reference probabilities exactly


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "older-cpu"])
def test_cpu_training_uses_bf16_only_for_large_crops_on_native_bf16_cpus(monkeypatch, native):
    """Both kinds of CPU, whichever this one is: the rule, not the machine, is what is tested."""
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", CPU, 64) is None and resolve_amp("auto", CPU, CPU_BF16_MIN_IMAGE_SIZE - 1) is None
    assert resolve_amp("auto", CPU, CPU_BF16_MIN_IMAGE_SIZE) == (torch.bfloat16 if native else None)
    assert resolve_amp("auto", CPU) is None  # inference: full precision on any CPU


def test_a_bare_cuda_device_is_each_processs_own_gpu():
    """Under torchrun each process is handed its local rank; `--device cuda` must not put them all on GPU 0."""
    if not torch.cuda.is_available():
        with pytest.raises(DeepfakeError, match="no CUDA GPU is visible"):
            resolve_device("cuda", local_rank=1)
        return
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # a GPU named is that GPU


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
