import pytest
import torch

from deepfake_cli.device import CPU_BF16_MIN_IMAGE_SIZE, resolve_amp, resolve_device
from deepfake_cli.errors import DeepfakeError

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


def test_asking_for_a_missing_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(DeepfakeError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")
