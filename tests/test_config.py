"""`train --config FILE`: a run's settings from TOML or JSON, typed options over them."""

import json
import re

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from conftest import IMAGE_SIZE, SEQ_LEN
from deepfake_cli.cli import app
from deepfake_cli.train import TrainConfig

runner = CliRunner()
TINY = f"""epochs = 1
batch_size = 4
seq_len = {SEQ_LEN}
image_size = {IMAGE_SIZE}
pretrained = false
workers = 0
ema = 0.5
"""


def test_settings_come_from_the_file_and_typed_options_win(extracted, tmp_path):
    config = tmp_path / "recipe.toml"
    config.write_text(TINY)
    result = runner.invoke(app, ["train", str(extracted), "--config", str(config), "--run-dir", str(tmp_path / "run"),
                                 "--lr", "3e-4"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["epochs"], saved["seq_len"], saved["ema"], saved["lr"]) == (1, SEQ_LEN, 0.5, 3e-4)
    assert saved["seed"] == 42  # what neither gives: the default
    assert saved["epoch_size"] == 96 and re.search(r"each epoch goes over the training set \d+ times \(--epoch-size 96\)",
                                                   " ".join(result.output.split()))
    # a few validation videos: train says its calibration will not hold on other people
    assert re.search(r"calibration: P\(fake\) is fitted on \d+ validation videos, too few", " ".join(result.output.split()))


def test_a_runs_config_json_trains_the_same_run_again(trained_run, tmp_path):
    again = tmp_path / "again"
    result = runner.invoke(app, ["train", "--config", str(trained_run / "config.json"), "--run-dir", str(again)])
    assert result.exit_code == 0, result.output
    first, second = (torch.load(run / "best.pt", weights_only=True)["model"] for run in (trained_run, again))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("text, name, says", [
    ("epochs = 1\nlearning_rate = 0.1\n", "bad.toml", "unknown settings learning_rate"),
    ("epochs = = 1\n", "broken.toml", "not valid TOML"),
    ('{"epochs": 1,', "broken.json", "not valid JSON"),
    ("[1, 2]", "list.json", "expected settings by name"),
])
def test_a_bad_config_file_is_one_line(extracted, tmp_path, text, name, says):
    config = tmp_path / name
    config.write_text(text)
    result = runner.invoke(app, ["train", str(extracted), "--config", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_config_and_resume_do_not_go_together(trained_run, tmp_path):
    (tmp_path / "c.toml").write_text(TINY)
    result = runner.invoke(app, ["train", "--resume", "--run-dir", str(trained_run), "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 2 and "--resume continues one as it began" in result.output


def test_every_typed_option_is_a_setting():
    """Each option of `train` but the run's own (--resume, --json, --config) can be typed over a config file."""
    command = typer.main.get_command(app).commands["train"]
    names = {p.name for p in command.params} - {"resume", "as_json", "config"}
    assert names <= set(TrainConfig.NAMES)
