"""The command line's vocabulary: one name per idea across commands, the earlier spellings still read."""

import json
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from deepfake_cli.cli import app
from deepfake_cli.train.config import read_config_file

runner = CliRunner()


def test_extract_reads_size_as_image_size_and_workers_0_runs_in_this_process(clips, tmp_path):
    for spelling, out in (("--image-size", tmp_path / "new"), ("--size", tmp_path / "old")):
        result = runner.invoke(app, ["extract", str(clips["real"]), str(out), "--frames", "4", spelling, "48",
                                     "--workers", "0"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / ".deepfake" / "extract.json").read_text())["crop"]["size"] == 48
        assert len(list(out.rglob("real_*.jpg"))) == 4
    assert "--size " not in runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output  # hidden


def test_train_reads_seq_len_as_frames(extracted, tmp_path):
    for spelling in (["--frames", "0"], ["--seq-len", "0"], ["--seq-len=0"]):
        result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), *spelling])
        assert result.exit_code == 2 and "--frames must be at least 1" in result.output, (spelling, result.output)
    assert "--seq-len" not in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output


def test_a_config_file_takes_the_flags_names_or_the_settings_names(tmp_path):
    for text in ("frames = 8\nrun_dir = 'r'\n", "seq_len = 8\nrun = 'r'\n"):
        (tmp_path / "c.toml").write_text(text)
        assert read_config_file(tmp_path / "c.toml") == {"seq_len": 8, "run": "r"}, tomllib.loads(text)


def test_evaluate_json_prints_and_the_old_json_file_form_still_writes_the_file(trained_run, extracted, tmp_path):
    model = ["--model", str(trained_run / "best.pt"), "--split", "all", "--workers", "0"]
    printed = runner.invoke(app, ["evaluate", str(extracted), *model, "--json"])
    assert printed.exit_code == 0, printed.output
    report = json.loads(printed.stdout)
    for args, path in (([str(extracted), *model, "--json", str(tmp_path / "a.json")], tmp_path / "a.json"),
                       ([str(extracted), *model, f"--json={tmp_path / 'b.json'}"], tmp_path / "b.json"),
                       (["--json", str(extracted), *model, "--out", str(tmp_path / "c.json")], tmp_path / "c.json")):
        result = runner.invoke(app, ["evaluate", *args])
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(path.read_text())["at_threshold"] == report["at_threshold"], args


def test_every_package_of_the_code_is_in_the_wheel():
    """setuptools' `packages` lists them by hand: a new subpackage left out would be missing from a
    non-editable install."""
    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "deepfake_cli").rglob("__init__.py")}
    assert listed == found
