"""`deepfake export`: the ONNX graph gives the checkpoint's P(fake), and predict runs it without torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import SEQ_LEN
from deepfake_cli.checkpoint import load_detector
from deepfake_cli.cli import app
from deepfake_cli.data import SequenceDataset, load_vectors, scan
from deepfake_cli.evaluate import evaluate
from deepfake_cli.inference import score_windows
from deepfake_cli.onnxfile import FORMAT, METADATA_KEY, read_description
from deepfake_cli.scorer import load_onnx, onnx_session

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(lite0_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = runner.invoke(app, ["export", str(lite0_run / "best.pt"), str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["max_difference"] < 1e-4
    assert len(result.output.splitlines()) <= 3, result.output  # the result, not the exporter's log of its rewrites
    return out


def test_the_export_gives_the_checkpoints_scores_on_real_crops(lite0_run, exported, extracted):
    detector = load_detector(lite0_run / "best.pt")
    samples = scan(extracted, SEQ_LEN)[:6]
    dataset = SequenceDataset(extracted, samples, detector.inputs)
    crops = np.stack([dataset.frames(s) for s in samples])  # (6, T, S, S, 3): a batch size export never traced
    vectors = np.stack([load_vectors(extracted, s, SEQ_LEN) for s in samples])
    expected, expected_frames = score_windows(detector.model, torch.from_numpy(crops).permute(0, 1, 4, 2, 3),
                                              torch.from_numpy(vectors), detector.inputs, torch.device("cpu"), None)
    model = load_onnx(exported, "cpu")
    member, inputs = model.member, model.inputs
    got, got_frames = model.score(crops, vectors)
    assert got.shape == (6,) and got_frames.shape == (6, SEQ_LEN)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got_frames, expected_frames, atol=1e-4)
    assert np.ptp(got) > 1e-3  # different videos, different scores: not a constant graph
    assert member.threshold == pytest.approx(detector.threshold) and inputs == detector.inputs
    # Crops sent through the backbone in pieces as predict sends them, then windows of their rows.
    flat = crops.reshape(-1, *crops.shape[2:])
    features = np.concatenate([model.embed(flat[:5]), model.embed(flat[5:])])
    rows = np.arange(len(flat)).reshape(6, SEQ_LEN)
    np.testing.assert_allclose(model.head(features, rows, vectors)[0], expected, atol=1e-4)
    np.testing.assert_allclose(model.head(features, rows[::-1], vectors[::-1])[0], expected[::-1], atol=1e-4)
    # The graph's own p_fake is calibrated, for those who run it without deepfake-cli, in one run.
    calibrated, raw = onnx_session(exported, "cpu").run(["p_fake", "raw_p_fake"], {
        "crops": flat, "features": np.zeros((0, features.shape[1]), np.float32), "vectors": vectors, "windows": rows})
    np.testing.assert_allclose(raw, got, atol=1e-6)
    np.testing.assert_allclose(calibrated, detector.calibrated(raw.astype(np.float64)), atol=1e-5)
    assert member.calibration == detector.calibration is not None


def test_the_export_describes_itself_as_the_checkpoint_does(lite0_run, exported):
    description = read_description(exported)
    detector = load_detector(lite0_run / "best.pt")
    assert description["format"] == FORMAT and description["backbone"] == "efficientnet_lite0"
    assert description["inputs"] == json.loads(json.dumps(detector.inputs.to_dict()))  # crop, sampling, seq_len, ...
    assert description["real_folders"] == detector.meta["real_folders"]


def test_evaluate_gives_the_same_scores_from_the_export(lite0_run, exported, extracted):
    from_pt = evaluate(extracted, lite0_run / "best.pt", split="all", workers=0)
    from_onnx = evaluate(extracted, exported, split="all")
    assert [s["video"] for s in from_onnx["scores"]] == [s["video"] for s in from_pt["scores"]]
    np.testing.assert_allclose([s["p_fake"] for s in from_onnx["scores"]], [s["p_fake"] for s in from_pt["scores"]],
                               atol=1e-4)
    assert from_onnx["at_threshold"]["auc"] == pytest.approx(from_pt["at_threshold"]["auc"])


def _without_torch(args: list[str], tmp_path: Path) -> list[str]:
    """`deepfake ARGS` in a fresh interpreter where `torch` fails to import, as on a scoring-only machine
    (in this process and in the model's); its stdout lines, after checking no torch module was loaded."""
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True, exist_ok=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    script = ("import json, sys\n"
              "from deepfake_cli.cli import main\n"
              f"sys.argv = ['deepfake', *{args!r}]\n"
              "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *lines, modules = done.stdout.strip().splitlines()
    assert json.loads(modules) == []
    return lines


def test_predict_with_an_export_runs_where_torch_cannot_be_imported(lite0_run, exported, clips, tmp_path):
    lines = _without_torch(["predict", str(clips["fake"]), "--model", str(exported), "--json",
                            "--report", str(tmp_path / "r.html")], tmp_path)
    verdict = json.loads(lines[-1])
    assert verdict["status"] == "ok" and 0 <= verdict["p_fake"] <= 1
    report = (tmp_path / "r.html").read_text()  # a report without torch: faces, timeline, no heatmap
    assert "no heatmap: an exported .onnx model has no gradients" in report and "Grad-CAM" not in report

    with_torch = runner.invoke(app, ["predict", str(clips["fake"]), "--model", str(lite0_run / "best.pt"), "--json"])
    assert with_torch.exit_code == 0, with_torch.output
    assert json.loads(with_torch.stdout.strip().splitlines()[-1])["p_fake"] == pytest.approx(verdict["p_fake"], abs=1e-4)


def test_evaluate_with_an_export_runs_where_torch_cannot_be_imported(lite0_run, exported, extracted, tmp_path):
    lines = _without_torch(["evaluate", str(extracted), "--model", str(exported), "--split", "all", "--json",
                            "--plots", str(tmp_path / "plots"), "--report", str(tmp_path / "e.html")], tmp_path)
    result = json.loads(next(line for line in lines if line.startswith("{")))
    with_torch = evaluate(extracted, lite0_run / "best.pt", split="all", workers=0)
    np.testing.assert_allclose([s["p_fake"] for s in result["scores"]], [s["p_fake"] for s in with_torch["scores"]],
                               atol=1e-4)
    assert (tmp_path / "plots" / "roc.png").is_file() and "fakes called real" in (tmp_path / "e.html").read_text()


def _rewritten(exported: Path, out: Path, description: dict | None) -> Path:
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    if description is not None:
        model.metadata_props.add(key=METADATA_KEY, value=json.dumps(description))
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("kind, message", [
    ("garbage", "not an ONNX model"),
    ("foreign", "not one deepfake-cli exported"),
    ("newer", "upgrade deepfake-cli"),
])
def test_an_onnx_file_that_is_not_ours_gets_one_line(exported, clips, tmp_path, kind, message):
    path = tmp_path / f"{kind}.onnx"
    if kind == "garbage":
        path.write_bytes(b"\xff\xff\xff\xff not protobuf at all")
    else:
        description = None if kind == "foreign" else {**read_description(exported), "format": "deepfake-cli-onnx/3"}
        _rewritten(exported, path, description)
    for command in (["predict", str(clips["real"])], ["evaluate", str(tmp_path)]):
        result = runner.invoke(app, [*command, "--model", str(path)])
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output, result.output


class _FormatOneGraph(torch.nn.Module):
    """The graph `deepfake export` wrote before crops and windows came apart (deepfake-cli-onnx/1):
    (N, T, S, S, 3) uint8 crops and (N, T, 5) distances in, P(fake) out."""

    def __init__(self, detector):
        super().__init__()
        self.model, self.inputs = detector.model, detector.inputs

    def forward(self, crops, vectors):
        b, t = crops.shape[:2]
        features = self.model.cnn(self.inputs.images(crops.permute(0, 1, 4, 2, 3)).flatten(0, 1)).view(b, t, -1)
        sequence, frames = self.model.forward_parts(features, self.inputs.landmark_features(vectors))
        logits = self.model.combine(sequence, frames)
        return torch.sigmoid(logits), torch.sigmoid(logits), torch.sigmoid(frames)


def test_a_file_of_the_first_export_format_still_scores(lite0_run, exported, clips, extracted, tmp_path):
    detector = load_detector(lite0_run / "best.pt")
    crops = torch.zeros((2, SEQ_LEN, detector.inputs.image_size, detector.inputs.image_size, 3), dtype=torch.uint8)
    windows = torch.export.Dim("windows", min=1, max=64)
    program = torch.onnx.export(_FormatOneGraph(detector).eval(), (crops, torch.ones((2, SEQ_LEN, 5))), dynamo=True,
                                input_names=["crops", "vectors"], output_names=["p_fake", "raw_p_fake", "frame_p_fake"],
                                dynamic_shapes={"crops": {0: windows}, "vectors": {0: windows}}, external_data=False)
    program.model.metadata_props.update({METADATA_KEY: json.dumps({**read_description(exported),
                                                                   "format": "deepfake-cli-onnx/1"})})
    old = tmp_path / "old.onnx"
    program.save(str(old))
    scores = {}
    for model in (old, exported):
        result = runner.invoke(app, ["predict", str(clips["fake"]), "--model", str(model), "--json"])
        assert result.exit_code == 0, result.output
        scores[model] = json.loads(result.stdout.strip().splitlines()[-1])["raw_p_fake"]
    assert scores[old] == pytest.approx(scores[exported], abs=1e-4)
    alone = json.loads(result.stdout.strip().splitlines()[-1])["p_fake"]  # the export's, calibrated
    # An ensemble of the two: one member streams its crops' features, the other takes whole windows.
    result = runner.invoke(app, ["predict", str(clips["fake"]), "-m", str(old), "-m", str(exported), "--json"])
    assert result.exit_code == 0, result.output
    assert [m["p_fake"] for m in json.loads(result.stdout.strip().splitlines()[-1])["models"]] == \
        pytest.approx([alone] * 2, abs=1e-4)
    from_old = evaluate(extracted, old, split="all")
    from_new = evaluate(extracted, exported, split="all")
    np.testing.assert_allclose([s["raw_p_fake"] for s in from_old["scores"]],
                               [s["raw_p_fake"] for s in from_new["scores"]], atol=1e-4)


def test_export_refuses_a_name_that_is_not_onnx_and_a_missing_checkpoint(lite0_run, tmp_path):
    result = runner.invoke(app, ["export", str(lite0_run / "best.pt"), str(tmp_path / "model.pt")])
    assert result.exit_code != 0 and "must end in .onnx" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "none.pt")])
    assert result.exit_code != 0 and "no such checkpoint" in result.output
    assert not list(tmp_path.iterdir())
