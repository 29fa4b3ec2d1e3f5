import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from typer.testing import CliRunner

from conftest import SEQ_LEN, tiny_config
from deepfake_cli.checkpoint import load_detector, read_checkpoint
from deepfake_cli.cli import app
from deepfake_cli.data import (GroupedSampler, Sample, SelfBlendDataset, SequenceDataset, identity_split, identity_tokens,
                               made_on, pair_groups, read_split_file, scan)
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.evaluate import evaluate
from deepfake_cli.model import DeepfakeDetector
from deepfake_cli.inputs import InputSpec
from deepfake_cli.metrics import bce
from deepfake_cli.train import TrainConfig, train
from deepfake_cli.train.config import EPOCH_SIZE, resume_config
from deepfake_cli.train.history import is_better
from deepfake_cli.train.order import training_order

runner = CliRunner()


def test_a_run_writes_every_run_folder_file(trained_run, extracted):
    for name in ("best.pt", "last.pt", "config.json", "split.json", "metrics.csv", "curves.png"):
        assert (trained_run / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(trained_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    history = read_checkpoint(trained_run / "last.pt")["history"]  # the rows as the run computed them
    for row, kept in zip(rows, history, strict=True):
        for key in ("train_loss", "val_loss", "accuracy", "f1", "macro_f1", "auc", "threshold"):
            assert float(row[key]) == pytest.approx(kept[key], rel=1e-5), key
    best_row = next(r for r in rows if r["best"] == "1")
    scored = evaluate(extracted, trained_run / "best.pt", split="val", workers=0)["scores"]  # best.pt on its validation
    labels, raw = np.array([s["label"] for s in scored]), np.array([s["raw_p_fake"] for s in scored])
    assert float(best_row["val_loss"]) == pytest.approx(bce(labels, raw), abs=1e-5)  # the model's own scores
    assert [r["select"] for r in rows] == ["auc"] * 2  # the selection rule, on every row
    best = read_checkpoint(trained_run / "best.pt")["meta"]
    assert [r["epoch"] for r in rows if r["best"] == "1"] == [str(best["epoch"])] and best["select"] == "auc"
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_describes_itself(trained_run):
    payload = read_checkpoint(trained_run / "best.pt")
    assert payload["format"] == "deepfake-cli/1" and payload["classes"] == ["real", "fake"]
    inputs = payload["inputs"]
    assert inputs["seq_len"] == SEQ_LEN and inputs["rgb"] and inputs["landmarks"] == "face_scale"
    assert len(inputs["landmark_mean"]) == 5 and inputs["crop"]["relative"]
    assert payload["model_args"]["backbone"] == payload["meta"]["backbone"] == "efficientnet_b0"
    assert payload["meta"]["weights"] == "scratch" and "torch" in payload["meta"]["versions"]
    assert 0 < payload["threshold"] < 1
    detector = load_detector(trained_run / "best.pt")
    assert detector.model.readout == "final" and not detector.reference


def test_split_keeps_each_person_on_one_side(trained_run):
    split = json.loads((trained_run / "split.json").read_text())
    people = [set().union(*(identity_tokens(k.split("/")[1]) for k in split[part])) for part in ("train", "val")]
    assert not people[0] & people[1]


def test_identity_tokens_for_ff_and_celeb_df_names():
    assert identity_tokens("033") == {"033"}
    assert identity_tokens("033_097") == {"033", "097"}
    assert identity_tokens("id0_id16_0003") == {"id0", "id16"}
    assert identity_tokens("id0_0003") == {"id0"}
    assert identity_tokens("some_clip") == {"some_clip"}


def test_made_on_names_the_real_video_under_a_fake():
    assert made_on("033") == made_on("033_097") == "033"
    assert made_on("id0_id16_0003") == made_on("id0_0003") == "id0_0003"
    assert made_on("some_clip") == "some_clip"


def test_pair_groups_join_a_swap_with_both_people_and_cut_long_chains():
    def keys(samples, groups):
        return sorted(sorted(samples[i].key for i in group) for group in groups)

    ff = [Sample("original", v, 0) for v in ("000", "003", "005")] + [
        Sample("Deepfakes", "000_003", 1), Sample("Deepfakes", "003_000", 1), Sample("NeuralTextures", "005", 1)]
    assert keys(ff, pair_groups(ff)) == [["Deepfakes/000_003", "Deepfakes/003_000", "original/000", "original/003"],
                                         ["NeuralTextures/005", "original/005"]]
    celeb = [Sample("Celeb-real", v, 0) for v in ("id0_0000", "id1_0000", "id2_0000")] + [
        Sample("Celeb-synthesis", v, 1) for v in ("id0_id1_0000", "id1_id2_0000")]  # one chain of three people
    assert len(pair_groups(celeb)) == 1
    assert keys(celeb, pair_groups(celeb, most=4)) == [["Celeb-real/id0_0000", "Celeb-synthesis/id0_id1_0000"],
                                                       ["Celeb-real/id1_0000", "Celeb-synthesis/id1_id2_0000"],
                                                       ["Celeb-real/id2_0000"]]


def test_grouped_sampler_keeps_each_group_together_and_shares_it_between_processes():
    groups = [[0, 1], [2, 3, 4], [5], [6, 7]]
    order = list(GroupedSampler(groups, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(8))
    for group in groups:
        where = sorted(order.index(i) for i in group)
        assert where == list(range(where[0], where[0] + len(group))), (group, order)
    shares = [list(GroupedSampler(groups, torch.Generator().manual_seed(0), rank, 3)) for rank in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3] and [k for share in shares for k in share] == order + order[:1]  # padded as DistributedSampler


def test_pairs_put_a_fake_beside_its_real_video_augmented_alike(extracted, tmp_path):
    """A "fake" that is a byte copy of its real video comes out identical with --pairs, and differs without.
    Its group is original/000 (the video it was made on), original/001 (the face it carries) and itself."""
    data = tmp_path / "data"
    (data / "FaceSwap").mkdir(parents=True)
    (data / "original").symlink_to(extracted / "original")
    for i in range(SEQ_LEN):
        for ext in ("jpg", "npy"):
            (data / "FaceSwap" / f"000_001_{i}.{ext}").write_bytes((extracted / "original" / f"000_{i}.{ext}").read_bytes())
    samples = scan(data, SEQ_LEN)
    dataset = SequenceDataset(data, samples, InputSpec(seq_len=SEQ_LEN, image_size=32), augment=True)
    real, fake = samples.index(Sample("original", "000", 0)), samples.index(Sample("FaceSwap", "000_001", 1))
    for pairs in (True, False):
        sampler = training_order(dataset, tiny_config(data, None, pairs=pairs), torch.Generator().manual_seed(5))
        sampler.set_epoch(3)
        keys = list(sampler)
        at = {key[0]: n for n, key in enumerate(keys)}
        same = torch.equal(dataset[keys[at[real]]][0], dataset[keys[at[fake]]][0])
        assert same == pairs and (abs(at[real] - at[fake]) <= 2 or not pairs)


@pytest.mark.parametrize("self_blend", [False, True])
def test_an_epoch_size_goes_over_a_small_training_set_again_with_fresh_draws(extracted, self_blend):
    """--epoch-size: every video comes back in each pass, reshuffled, and with a draw of its own
    (a fresh augmentation and self-blend); 0 keeps the single pass and its keys."""
    samples = scan(extracted, SEQ_LEN)
    Dataset = SelfBlendDataset if self_blend else SequenceDataset
    dataset = Dataset(extracted, [s for s in samples if s.label == 0] if self_blend else samples,
                      InputSpec(seq_len=SEQ_LEN, image_size=32), augment=True)
    once = training_order(dataset, tiny_config(extracted, None, self_blend=self_blend), torch.Generator().manual_seed(5))
    again = training_order(dataset, tiny_config(extracted, None, self_blend=self_blend, epoch_size=2 * len(dataset) + 1),
                           torch.Generator().manual_seed(5))
    for sampler in (once, again):
        sampler.set_epoch(2)
    first, keys = list(once), list(again)
    assert len(keys) == 3 * len(first) == len(again)
    assert keys[:len(first)] == first and {k[:3] for k in first} == {(i, 0, 2) for i in range(len(dataset))}
    passes = [keys[p * len(first):(p + 1) * len(first)] for p in range(3)]
    assert all(sorted(k[0] for k in part) == list(range(len(dataset))) for part in passes)
    assert {k[3] for k in passes[1]} == {1} and {k[3] for k in passes[2]} == {2}
    video = first[0][0]
    later = next(k for k in passes[2] if k[0] == video)
    assert not torch.equal(dataset[first[0]][0], dataset[later][0])  # the same video, drawn anew


def test_by_default_a_small_training_set_is_gone_over_until_an_epoch_shows_96_sequences(extracted, tmp_path):
    """FaceForensics++'s 60 videos (48 in training) twice an epoch, a large dataset once; --self-blend once;
    a run from before --epoch-size resumes as it began, once over its set."""
    supervised = TrainConfig(extracted)
    assert supervised.data.epoch_size == EPOCH_SIZE == 96
    assert (supervised.data.passes(48), supervised.data.passes(95), supervised.data.passes(5000)) == (2, 2, 1)
    assert TrainConfig(extracted, self_blend=True).data.epoch_size == 0
    assert TrainConfig(extracted, epoch_size=0).data.passes(48) == 1
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({k: v for k, v in supervised.to_dict().items() if k != "epoch_size"}))
    assert resume_config(run).data.epoch_size == 0


def test_identity_split_never_leaks_a_person_across_ff_pairs():
    samples = [Sample("original", f"{i:03d}", 0) for i in range(20)]
    samples += [Sample(m, f"{a:03d}_{b:03d}", 1) for m in ("Deepfakes", "Face2Face") for a, b in
                [(i, i + 1) for i in range(0, 20, 2)] + [(i + 1, i) for i in range(0, 20, 2)]]
    split = identity_split(samples, 0.2, seed=1)
    people = [set().union(*(identity_tokens(s.video) for s in split[p])) for p in ("train", "val")]
    assert not people[0] & people[1]
    assert 0.15 <= len(split["val"]) / len(samples) <= 0.3


def test_split_file_accepts_ff_pairs(tmp_path):
    samples = [Sample("original", "000", 0), Sample("original", "001", 0), Sample("Deepfakes", "000_001", 1),
               Sample("Deepfakes", "001_000", 1), Sample("original", "002", 0)]
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [["000", "001"]], "val": ["002"]}))
    split = read_split_file(path, samples)
    assert len(split["train"]) == 4 and [s.video for s in split["val"]] == ["002"]


@pytest.mark.parametrize("spec, message", [
    ({"train": ["000"], "val": ["001"], "tset": ["002"]}, "unknown key 'tset'; the keys are train, val and test"),
    ({"train": "000", "val": ["001"]}, "'train' must be a list of video ids"),
    ({"train": ["000"], "val": [["001", 2]]}, "'val' must be a list of video ids"),
    ({"train": ["000"]}, "expected a JSON object with 'train' and 'val'"),
    (["000", "001"], "expected a JSON object with 'train' and 'val'"),
])
def test_a_split_file_with_a_typo_or_the_wrong_shape_is_refused_by_name(tmp_path, spec, message):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(DeepfakeError, match=re.escape(message)):
        read_split_file(path, [Sample("original", "000", 0), Sample("original", "001", 0)])


@pytest.mark.parametrize("recipe", [{}, {"self_blend": True}], ids=["plain", "self-blend"])
def test_resume_continues_exactly(extracted, tmp_path, recipe):
    straight = train(tiny_config(extracted, tmp_path / "straight", epochs=2, **recipe))
    train(tiny_config(extracted, tmp_path / "resumed", epochs=1, **recipe))
    resumed = train(tiny_config(extracted, tmp_path / "resumed", epochs=2, **recipe), resume=True)
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in straight.history])
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_run_into_the_same_folder_is_refused(trained_run, extracted):
    with pytest.raises(DeepfakeError, match="--resume"):
        train(tiny_config(extracted, trained_run))


def test_freeze_backbone_caches_features_and_trains_the_head(extracted, tmp_path):
    torch.manual_seed(7)
    weights = {k: v for k, v in DeepfakeDetector().state_dict().items() if k.startswith("cnn.")}
    torch.save({k.removeprefix("cnn."): v for k, v in weights.items()}, tmp_path / "b0.pth")
    run = tmp_path / "frozen"
    train(tiny_config(extracted, run, epochs=1, freeze_backbone=True, backbone_weights=tmp_path / "b0.pth"))
    assert len(list((run / "cache").glob("features-*.npy"))) == 2
    after_one = read_checkpoint(run / "last.pt")["model"]
    result = train(tiny_config(extracted, run, epochs=2, freeze_backbone=True, backbone_weights=tmp_path / "b0.pth"),
                   resume=True)
    after_two = read_checkpoint(run / "last.pt")["model"]
    assert len(result.history) == 2
    for key, value in weights.items():  # the backbone, BatchNorm statistics included, never moved
        assert torch.equal(after_one[key], value) and torch.equal(after_two[key], value), key
    for key in ("lstm.weight_ih_l0", "lstm.weight_hh_l0_reverse", "fc.0.weight", "fc.3.weight"):
        assert not torch.equal(after_one[key], after_two[key]), key  # the LSTM and head learn


@pytest.mark.parametrize("recipe", [[], ["--self-blend"]], ids=["plain", "self-blend"])
def test_ddp_with_two_gloo_processes(extracted, tmp_path, recipe):
    """With --self-blend, DDP wraps the detector and its training-only mask head together."""
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "deepfake_cli", "train", str(extracted), "--run-dir", str(run), "--epochs", "1", "--frames", str(SEQ_LEN),
               "--image-size", "32", "--no-pretrained", "--workers", "0", "--json", *recipe]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "best.pt").is_file() and len(list(csv.DictReader(open(run / "metrics.csv")))) == 1
    assert ("mask_head" in read_checkpoint(run / "last.pt")) == bool(recipe)


def test_bad_data_is_named_before_training(extracted, tmp_path, copy_of):
    broken = copy_of(extracted, "broken")
    (broken / "original" / "000_1.npy").unlink()
    np.save(broken / "original" / "001_0.npy", np.zeros(3))
    result = runner.invoke(app, ["train", str(broken), "--run-dir", str(tmp_path / "r"), "--frames", "4", "--no-pretrained"])
    assert result.exit_code == 2 and "000_1.npy: missing" in result.output and "Traceback" not in result.output
    (broken / "original" / "000_1.npy").write_bytes((extracted / "original" / "000_1.npy").read_bytes())
    result = runner.invoke(app, ["train", str(broken), "--run-dir", str(tmp_path / "r"), "--frames", "4", "--no-pretrained"])
    assert result.exit_code == 2 and "001_0.npy: expected 5" in result.output
    train(tiny_config(broken, tmp_path / "skip", skip_bad=True))
    split = json.loads((tmp_path / "skip" / "split.json").read_text())
    everything = [f"{s.folder}/{s.video}" for s in scan(extracted, SEQ_LEN)]
    assert sorted(split["train"] + split["val"]) == sorted(k for k in everything if k != "original/001")


def test_train_cli_rejects_bad_options_by_flag_name(extracted, tmp_path):
    # Choices are refused by the command line itself, with the values it takes ...
    for option, value, last in (("--schedule", "sometimes", "'plateau'"), ("--backbone", "resnet50", "'efficientnet_lite0'"),
                                ("--select", "accuracy", "'loss'"), ("--amp", "fp8", "'off'")):
        result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), option, value])
        assert result.exit_code == 2 and f"'{value}' is not one of" in result.output and last in result.output, result.output
    # ... and, from a --config file, by the configuration, by the option's name.
    for setting, value, says in (("schedule", "sometimes", "--schedule must be one of"),
                                 ("backbone", "resnet50", "--backbone resnet50: unknown; choose one of efficientnet_b0, efficientnet_lite0"),
                                 ("select", "accuracy", "--select must be one of macro-f1, f1, auc, loss")):
        (tmp_path / "c.json").write_text(json.dumps({setting: value}))
        result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), "--config", str(tmp_path / "c.json")])
        assert result.exit_code == 2 and says in result.output, result.output
    result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), "--frame-loss", "-1"])
    assert result.exit_code == 2 and "--frame-loss must be 0 (off) or more" in result.output
    result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), "--frames", str(SEQ_LEN),
                                 "--backbone-weights", str(tmp_path / "missing.pth")])
    assert result.exit_code == 2 and "missing.pth: cannot read it" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no such folder" in result.output


def test_reference_layout_with_a_stray_file_at_the_top_trains(extracted, tmp_path, copy_of):
    """The notebook's reader crashed on a plain file next to the label folders; ours ignores it."""
    data = copy_of(extracted, "data")
    (data / "notes.txt").write_text("a manifest a user keeps beside the data")
    assert train(tiny_config(data, tmp_path / "r")).history


def test_cli_resume_keeps_the_runs_own_settings_and_applies_or_refuses_the_options_given(trained_run, tmp_path, copy_of):
    run = copy_of(trained_run)
    result = runner.invoke(app, ["train", "--run-dir", str(run), "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["best"]["epoch"] in (1, 2)
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 2  # finished: nothing re-run, nothing lost
    for options, named in ((["--lr", "0.1"], "--lr"), (["--batch-size", "2", "--seed", "3"], "--batch-size, --seed")):
        result = runner.invoke(app, ["train", "--run-dir", str(run), "--resume", "--epochs", "3", *options])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"as it began, so {named} cannot change" in said, result.output
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 2  # a refused resume trains nothing
    result = runner.invoke(app, ["train", "--run-dir", str(run), "--resume", "--epochs", "3", "--patience", "5",
                                 "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert (config["epochs"], config["patience"], config["workers"], config["device"]) == (3, 5, 1, "cpu")
    assert config["lr"] == json.loads((trained_run / "config.json").read_text())["lr"]
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 3
    result = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "nothing"), "--resume"])
    assert result.exit_code == 2 and "no run to resume" in result.output
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "missing DATA" in result.output


def test_selection_never_keeps_the_everything_is_fake_epoch():
    """Two fakes per real: calling everything fake scores fake-class F1 0.8, and won selection before."""
    trivial = {"epoch": 1, "f1": 0.8, "macro_f1": 0.4, "auc": 0.46, "val_loss": 0.69}
    learned = {"epoch": 2, "f1": 0.75, "macro_f1": 0.71, "auc": 0.93, "val_loss": 0.52}

    def kept(select: str, history=(trivial, learned)) -> int:
        best = None
        for row in history:
            if is_better(row, best, select):
                best = row
        return best["epoch"]

    assert kept("macro-f1") == kept("auc") == kept("loss") == 2
    assert kept("f1") == 1  # the old rule, still there on request
    tie = {**learned, "epoch": 3, "auc": 0.95}
    assert kept("macro-f1", (trivial, learned, tie)) == 3  # equal macro F1: the higher AUC wins
    assert kept("macro-f1", (trivial, tie, learned)) == 3
    surer = {**learned, "epoch": 3, "val_loss": 0.4}
    assert kept("auc", (trivial, learned, surer)) == 3  # equal AUC: the lower validation loss wins


def test_a_lite0_run_rebuilds_from_the_file_alone(lite0_run):
    payload = read_checkpoint(lite0_run / "best.pt")
    assert payload["model_args"]["backbone"] == "efficientnet_lite0" and payload["meta"]["weights"] == "imagenet"
    assert list(payload["inputs"]["mean"]) == [127 / 255] * 3 and list(payload["inputs"]["std"]) == [128 / 255] * 3
    assert load_detector(lite0_run / "best.pt").model.backbone == "efficientnet_lite0"
    from deepfake_cli.backbones import lite_imagenet

    start, weights = lite_imagenet(), payload["model"]
    # The stem and the first two stages keep their ImageNet weights and BatchNorm statistics; the rest is fine-tuned.
    assert payload["meta"]["frozen_stages"] == 3
    frozen = [k for k in start if k.split(".")[1] in ("0", "1", "2") and start[k].is_floating_point()]
    assert len(frozen) > 20 and all((weights[f"cnn.{k}"] - start[k]).abs().max().item() < 1e-6 for k in frozen)
    changed = [k for k in start if k.split(".")[1] not in ("0", "1", "2") and k.endswith("weight")
               and (weights[f"cnn.{k}"] - start[k]).abs().max().item() > 1e-5]
    assert len(changed) > 50, len(changed)


def test_freeze_stages_zero_fine_tunes_the_stem_too(extracted, tmp_path):
    from deepfake_cli.backbones import lite_imagenet

    train(tiny_config(extracted, tmp_path / "run", backbone="efficientnet_lite0", pretrained=None, freeze_stages=0))
    payload = read_checkpoint(tmp_path / "run" / "best.pt")
    assert payload["meta"]["frozen_stages"] == 0
    stem = payload["model"]["cnn.features.0.0.weight"]
    assert (stem - lite_imagenet()["features.0.0.weight"]).abs().max().item() > 1e-5
    with pytest.raises(DeepfakeError, match="--freeze-stages must be between 0"):
        tiny_config(extracted, tmp_path / "other", freeze_stages=10)


def test_resume_rebuilds_the_runs_backbone(lite0_run, copy_of):
    run = copy_of(lite0_run)
    result = runner.invoke(app, ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(run / "last.pt")  # the copy was resumed, not the folder it was copied from
    assert payload["epoch"] == 2 and payload["model_args"]["backbone"] == "efficientnet_lite0"
    assert read_checkpoint(lite0_run / "last.pt")["epoch"] == 1
    assert payload["model_args"]["frame_head"] and "frame_head.weight" in payload["model"]


def test_a_checkpoint_of_ours_missing_a_part_is_refused_in_one_line(lite0_run, extracted, tmp_path):
    """The promised formats are the reference's state_dicts and this project's FORMAT as it is written
    now; a file of that format without one of its parts (cut by hand, or by a development build) is
    refused by name, not read with guesses."""
    payload = read_checkpoint(lite0_run / "best.pt")
    del payload["inputs"]["sampling"]
    torch.save(payload, tmp_path / "partial.pt")
    result = runner.invoke(app, ["evaluate", str(extracted), "--model", str(tmp_path / "partial.pt")])
    assert result.exit_code == 2 and "without inputs.sampling; train it again" in result.output, result.output
    assert "Traceback" not in result.output


def test_train_help_groups_its_options_and_fits_80_columns():
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "deepfake_cli", "train", "--help"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    panels = [line.strip("╭─ ").split(" ")[0] for line in result.stdout.splitlines() if line.startswith("╭─")]
    assert panels == ["Arguments", "Options", "Data", "Model", "Optimisation", "Hardware", "Run", "Advanced:"]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_the_frame_head_is_part_of_the_detector_and_its_loss_trains(trained_run, extracted, tmp_path):
    """best.pt holds the reference's keys plus the frame head; --frame-loss 0 trains the reference's model alone."""
    reference_keys = DeepfakeDetector().state_dict().keys()
    assert read_checkpoint(trained_run / "best.pt")["model"].keys() == reference_keys | {"frame_head.weight", "frame_head.bias"}
    assert load_detector(trained_run / "best.pt").model.frame_head is not None
    without = train(tiny_config(extracted, tmp_path / "without", frame_loss=0))
    payload = read_checkpoint(tmp_path / "without" / "best.pt")
    assert payload["model"].keys() == reference_keys and "frame_head" not in payload["model_args"]
    with_head = read_checkpoint(trained_run / "last.pt")["history"][0]["train_loss"]
    assert with_head > without.history[0]["train_loss"] + 0.3  # video loss + per-frame loss (~0.69 each)


def test_offline_without_a_backbone_named_trains_lite0_and_records_why(extracted, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))  # no torchvision B0 file; no network here
    train(tiny_config(extracted, tmp_path / "auto", pretrained=None))
    payload = read_checkpoint(tmp_path / "auto" / "best.pt")
    assert payload["model_args"]["backbone"] == "efficientnet_lite0" and payload["meta"]["weights"] == "imagenet"
    assert "efficientnet_b0's ImageNet weights are unavailable" in payload["meta"]["backbone_note"]
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["backbone"] is None  # the user asked for none


# ---- behaviours the README promises -------------------------------------------------------------


def frozen_config(extracted, run, **overrides):
    """A run whose validation cannot move: frozen backbone, a learning rate of nothing."""
    return tiny_config(extracted, run, freeze_backbone=True, lr=1e-12, **overrides)


def test_the_loss_weighs_fakes_by_real_over_fake_unless_told_not_to(trained_run, extracted, tmp_path):
    meta = read_checkpoint(trained_run / "best.pt")["meta"]
    counts = meta["split"]["train"]
    assert counts["real"] != counts["fake"] and meta["pos_weight"] == pytest.approx(counts["real"] / counts["fake"])
    train(frozen_config(extracted, tmp_path / "plain", balance=False))
    assert read_checkpoint(tmp_path / "plain" / "best.pt")["meta"]["pos_weight"] == 1.0


def test_patience_stops_when_validation_stops_improving(extracted, tmp_path):
    result = train(frozen_config(extracted, tmp_path / "p", epochs=5, patience=1))
    assert result.stopped_early and [r["epoch"] for r in result.history] == [1, 2]
    assert len(train(frozen_config(extracted, tmp_path / "all", epochs=3)).history) == 3  # patience 0: never


def test_schedules_set_each_epochs_learning_rate(extracted, tmp_path):
    cosine = train(tiny_config(extracted, tmp_path / "c", epochs=3, lr=1e-3, schedule="cosine", freeze_backbone=True))
    expected = [1e-3 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [r["lr"] for r in cosine.history] == pytest.approx(expected)
    # plateau: the validation loss of a frozen run never improves; after 2 such epochs the rate halves
    plateau = train(frozen_config(extracted, tmp_path / "p", epochs=4, schedule="plateau"))
    assert [r["lr"] for r in plateau.history] == pytest.approx([1e-12, 1e-12, 1e-12, 5e-13])


def test_warmup_raises_the_rate_over_epoch_1_and_the_weight_average_is_what_is_kept(extracted, tmp_path):
    rates = []  # each optimizer step's rate, as the step sees it
    hook = register_optimizer_step_pre_hook(lambda opt, *_: rates.append(opt.param_groups[0]["lr"]))
    try:
        result = train(tiny_config(extracted, tmp_path / "run", epochs=2, lr=1e-3))
    finally:
        hook.remove()
    steps = len(rates) // 2
    assert steps > 1 and rates == pytest.approx([1e-3 * i / steps for i in range(1, steps + 1)] + [1e-3] * steps)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["average_steps"] == 2 * steps and last["trained_model"].keys() == last["model"].keys()
    assert not torch.equal(last["model"]["fc.3.weight"], last["trained_model"]["fc.3.weight"])
    scored = evaluate(extracted, tmp_path / "run" / "last.pt", workers=0)  # validation scored the average
    assert scored["at_threshold"]["auc"] == pytest.approx(result.history[-1]["auc"])
    plain = train(tiny_config(extracted, tmp_path / "plain", epochs=1, ema=0, warmup=False))
    assert "trained_model" not in read_checkpoint(tmp_path / "plain" / "last.pt") and plain.history[0]["lr"] == 1e-4


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(extracted, tmp_path):
    run = tmp_path / "nan"
    train(tiny_config(extracted, run, epochs=1))
    state = read_checkpoint(run / "last.pt")
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 1e30  # as if the learning rate had been far too high
    torch.save(state, run / "last.pt")
    kept = {name: (run / name).read_bytes() for name in ("best.pt", "last.pt", "metrics.csv")}
    with pytest.raises(DeepfakeError, match=r"the loss became (nan|inf) at epoch 2.*last good checkpoint"):
        train(tiny_config(extracted, run, epochs=2), resume=True)
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_worker_processes_and_the_frame_cache_change_nothing(extracted, tmp_path):
    """Augmentation is drawn per (seed, epoch, video), so where a video is loaded does not matter."""
    keys = ("train_loss", "val_loss", "auc", "macro_f1")
    plain = train(tiny_config(extracted, tmp_path / "plain", epochs=2))
    workers = train(tiny_config(extracted, tmp_path / "workers", epochs=2, workers=2))
    cached = train(tiny_config(extracted, tmp_path / "cached", epochs=2, cache=True))
    for other in (workers, cached):
        for a, b in zip(plain.history, other.history):
            assert [b[k] for k in keys] == pytest.approx([a[k] for k in keys], abs=1e-5)
    assert len(list((tmp_path / "cached" / "cache" / "frames").rglob("*.npy"))) == len(scan(extracted, SEQ_LEN))


def test_real_folders_name_the_real_videos(extracted, tmp_path):
    data = tmp_path / "celeb"
    data.mkdir()
    (data / "Celeb-real").symlink_to(extracted / "original")
    (data / "Celeb-synthesis").symlink_to(extracted / "FaceSwap")
    with pytest.raises(DeepfakeError, match="only one class"):
        train(tiny_config(data, tmp_path / "r"))
    train(tiny_config(data, tmp_path / "r", real_folders=("Celeb-real",)))
    meta = read_checkpoint(tmp_path / "r" / "best.pt")["meta"]
    assert meta["real_folders"] == ["Celeb-real"] and meta["split"]["train"]["real"] > 0
    scores = evaluate(data, tmp_path / "r" / "best.pt", split="all", workers=0)["scores"]  # evaluate knows them too
    assert {(s["video"].split("/")[0], s["label"]) for s in scores} == {("Celeb-real", 0), ("Celeb-synthesis", 1)}


def test_a_split_file_decides_the_split_and_evaluate_reads_it(extracted, tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["000", "001", "002", "003"], "val": ["004"], "test": ["005"]}))
    train(tiny_config(extracted, tmp_path / "r", split_file=path))
    split = json.loads((tmp_path / "r" / "split.json").read_text())
    people = {part: {identity for key in keys for identity in identity_tokens(key.split("/")[1])}
              for part, keys in split.items()}
    assert people["val"] == {"004"} and people["test"] == {"005"} and people["train"] <= {"000", "001", "002", "003"}
    for part in ("train", "val", "test"):
        result = evaluate(extracted, tmp_path / "r" / "best.pt", split=part, workers=0)
        assert sorted(s["video"] for s in result["scores"]) == sorted(split[part]), part
    result = evaluate(extracted, tmp_path / "r" / "best.pt", split=str(path), workers=0)  # a file: its test part
    assert sorted(s["video"] for s in result["scores"]) == sorted(split["test"])


def test_a_script_without_a_main_guard_trains_with_workers(extracted, tmp_path):
    """Workers are forked: a user's plain script is not run again in each of them (spawn would)."""
    script = tmp_path / "mine.py"
    script.write_text(f"from deepfake_cli.train import TrainConfig, train\n"
                      f"result = train(TrainConfig(data={str(extracted)!r}, run={str(tmp_path / 'r')!r}, epochs=1, "
                      f"seq_len={SEQ_LEN}, image_size=32, pretrained=False, workers=2, epoch_size=0))\n"
                      f"print('trained', len(result.history))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.count("trained 1") == 1, done.stderr[-2000:]


def test_train_help_fits_one_screen_before_its_advanced_panel():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    advanced = next(i for i, line in enumerate(lines) if "Advanced" in line)
    assert advanced <= 60, advanced
    first_screen = "\n".join(lines[:advanced])
    for chosen in ("--epochs", "--batch-size", "--image-size", "--lr", "--device", "--self-blend", "--resume"):
        assert chosen in first_screen
    for research in ("--frame-loss", "--mask-loss", "--ema", "--warmup", "--pairs", "--select", "--schedule",
                     "--clip-grad", "--weight-decay", "--channels-last", "--balance", "--freeze-stages"):
        assert research not in first_screen and research in result.output, research
