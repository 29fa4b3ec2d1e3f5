"""deepfake_cli.memory: what keeping freed memory saves, counted in page faults in real subprocesses, and what it
must not cost (a forked worker holding a copy; a user's own malloc settings overridden)."""

import os
import subprocess
import sys

import pytest


STEPS = """
import resource, sys, torch
from pathlib import Path
from deepfake_cli.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
if sys.argv[1] == "train":  # a CPU training run, left to tune malloc itself
    from deepfake_cli.train import TrainConfig, train
    train(TrainConfig(sys.argv[2], run=sys.argv[3], epochs=1, batch_size=4, seq_len=4, image_size=32, pretrained=False,
                      workers=0, epoch_size=0, device="cpu"))
if sys.argv[1] == "load":  # a model loaded for inference on CPU, as evaluate and predict load it
    from deepfake_cli.checkpoint import load_detector
    load_detector(Path(sys.argv[2]), "cpu")
x = torch.randn(8, 32, 128, 128, requires_grad=True)
conv = torch.nn.Conv2d(32, 64, 3, padding=1)
faults = []
for _ in range(8):  # training steps whose 34 MB blocks are over glibc's largest mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    conv(x).relu().pow(2).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[3:]))  # the steps after the first three
"""


def _steps(mode: str, env: dict, *args: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", STEPS, mode, *args], capture_output=True, text=True, env=env, check=True)
    kept, faults = out.stdout.split()[-2:]
    return kept, int(faults)


@pytest.fixture(scope="module")
def untuned_faults(untuned_env) -> int:
    """The steps' page faults with glibc as it comes."""
    return _steps("default", untuned_env)[1]


def test_memory_a_training_step_frees_is_reused_without_faulting_it_in_again(untuned_faults, untuned_env):
    """What keep_freed_memory() is for, counted in page faults: by default every step faults its
    activations in again (about 94,000 pages a step here); kept, later steps fault in a block or two at most."""
    kept, faults = _steps("keep", untuned_env)
    assert untuned_faults > 5 * 50_000 and kept == "True" and faults < untuned_faults / 5


def test_cpu_training_keeps_the_memory_its_steps_free(extracted, tmp_path, untuned_faults, untuned_env):
    assert _steps("train", untuned_env, str(extracted), str(tmp_path / "run"))[1] < untuned_faults / 5


def test_cpu_inference_keeps_the_memory_its_passes_free(trained_run, untuned_faults, untuned_env):
    assert _steps("load", untuned_env, str(trained_run / "best.pt"))[1] < untuned_faults / 5


FORK = """
import os, signal, sys, time, torch
from deepfake_cli.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.randn(8, 32, 128, 128, requires_grad=True)
conv = torch.nn.Conv2d(32, 64, 3, padding=1)
for _ in range(3):  # the heap holds a few hundred MB of freed activations
    conv(x).relu().pow(2).sum().backward()
child = os.fork()  # as a loader starts its workers
if child == 0:
    time.sleep(60)
    os._exit(0)
for _ in range(3):  # the parent writes its activations again
    conv(x).relu().pow(2).sum().backward()
pss = sum(int(line.split()[1]) for line in open(f"/proc/{child}/smaps_rollup") if line.startswith("Pss:"))
os.kill(child, signal.SIGKILL)
print(kept, pss // 1024)  # MB of memory the child holds, its shares of pages split with the parent counted
"""


def test_a_process_forked_after_memory_was_kept_does_not_hold_a_copy_of_it(untuned_env):
    """Measured: the child holds 175 MB beside an untuned parent, 367 MB beside a parent that keeps its freed
    memory without returning it before the fork, 167 MB with it returned."""
    held = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", FORK, mode], capture_output=True, text=True, env=untuned_env,
                             check=True)
        kept, held[mode] = out.stdout.split()
    assert kept == "True" and int(held["keep"]) < int(held["default"]) + 64, held


def test_malloc_tuned_by_the_user_is_left_as_it_is():
    assert _steps("keep", {**os.environ, "MALLOC_ARENA_MAX": "2"})[0] == "False"
