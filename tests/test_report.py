"""`--report`: heatmaps of where the model looked, and one self-contained HTML page for predict and evaluate."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import SEQ_LEN
from deepfake_cli import data as D
from deepfake_cli.checkpoint import Detector, _ready
from deepfake_cli.cli import app
from deepfake_cli.heatmap import explain_window
from deepfake_cli.inputs import InputSpec
from deepfake_cli.model import DeepfakeDetector

runner = CliRunner()


class Page(HTMLParser):
    """What a browser would fetch or run from the page, and where its links go."""

    def __init__(self, text: str):
        super().__init__()
        self.sources, self.links, self.ids, self.images, self.rows, self.svgs = [], [], set(), [], 0, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids |= {attrs["id"]} if "id" in attrs else set()
        if tag in ("img", "script", "iframe", "source", "video", "link") and ("src" in attrs or "href" in attrs):
            self.sources.append(attrs.get("src") or attrs.get("href"))
        if tag == "img":
            self.images.append(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        self.rows += tag == "tr"
        self.svgs += tag == "svg"


def real_window(extracted: Path, size: int) -> tuple[np.ndarray, np.ndarray, InputSpec]:
    inputs = InputSpec(image_size=size, seq_len=SEQ_LEN)
    sample = D.scan(extracted, SEQ_LEN)[0]
    crops = np.asarray(D.SequenceDataset(extracted, [sample], inputs).frames(sample))
    return crops, D.load_vectors(extracted, sample, SEQ_LEN), inputs


def test_gradcam_of_a_frame_head_model_is_its_class_activation_map(extracted):
    """With a linear frame head on average-pooled features, the gradient of a frame's logit on its
    last feature map is the head's weight over the cells: Grad-CAM must be ReLU(w . A), scaled."""
    torch.manual_seed(0)
    crops, vectors, inputs = real_window(extracted, 96)  # a 3 x 3 map
    model = _ready(DeepfakeDetector(backbone="efficientnet_lite0", frame_head=True), "cpu")
    heat = explain_window(Detector(model, inputs, 0.5, Path("x.pt"), {}, reference=False), crops, vectors)
    assert set(heat) == {"gradcam"} and heat["gradcam"].shape == (SEQ_LEN, 3, 3)
    frames = torch.from_numpy(inputs.frames(list(crops)))[None].permute(0, 1, 4, 2, 3)
    with torch.no_grad():
        _, maps = model.forward_features(inputs.images(frames), maps=True)  # (T, 1280, 3, 3)
        cam = torch.relu(torch.einsum("c,tcij->tij", model.frame_head.weight[0], maps))
    expected = (cam / cam.max()).numpy()
    np.testing.assert_allclose(heat["gradcam"], expected, atol=1e-5)
    assert heat["gradcam"].max() == pytest.approx(1.0) and len(np.unique(heat["gradcam"].round(4))) > 3


def test_predict_report_is_one_self_contained_page_with_each_clip(trained_run, clips, tmp_path):
    inputs = [clips["real"], clips["fake"], clips["two_people"], clips["no_face"], clips["text"]]
    model = ["--model", str(trained_run / "best.pt")]
    plain = runner.invoke(app, ["predict", *map(str, inputs), *model, "--json"])
    report = tmp_path / "nested" / "report.html"
    result = runner.invoke(app, ["predict", *map(str, inputs), *model, "--json", "--report", str(report)])
    assert result.exit_code == plain.exit_code == 1, result.output  # two inputs cannot be scored
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    # A report changes nothing about the verdicts: the heatmaps are one more pass after scoring.
    assert [v["p_fake"] for v in verdicts] == [json.loads(line)["p_fake"] for line in plain.stdout.splitlines()]
    assert verdicts[0]["video"]["codec"] == "mpeg4" and verdicts[0]["video"]["width"] == 320
    page = Page(report.read_text())
    assert page.sources and all(s.startswith("data:image/") for s in page.sources)  # nothing fetched
    assert page.rows == 1 + len(inputs) and all(link.removeprefix("#") in page.ids for link in page.links)
    scored = [v for v in verdicts if v["status"] == "ok"]
    assert page.svgs == len(scored)  # a timeline per scored clip
    # Each scored clip: its top window's faces, and the Grad-CAM over each.
    faces = [i for i in page.images if i["alt"].startswith("faces ")]
    cams = [i for i in page.images if i["alt"].startswith("Grad-CAM")]
    assert len(faces) == len(cams) == SEQ_LEN * len(scored)
    text = report.read_text()
    for v in verdicts:
        assert Path(v["path"]).name in text
    assert "no_face" in text and "unreadable" in text
    assert "<script src" not in text and not re.search(r"https?://", text)


def test_a_report_that_cannot_be_written_fails_before_anything_is_scored(trained_run, clips, extracted, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in (["predict", str(clips["real"]), "--model", str(trained_run / "best.pt")],
                    ["evaluate", str(extracted), "--model", str(trained_run / "best.pt")]):
        for bad in (blocker / "report.html", tmp_path):
            result = runner.invoke(app, [*command, "--report", str(bad)])
            assert result.exit_code == 2 and f"--report {bad}" in result.output, result.output
            assert "P(fake)" not in result.output and "videos (" not in result.output  # nothing was scored
            assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_evaluate_report_holds_the_metrics_plots_and_the_most_confident_mistakes(trained_run, extracted, tmp_path):
    report = tmp_path / "eval.html"
    result = runner.invoke(app, ["evaluate", str(extracted), "--model", str(trained_run / "best.pt"), "--split", "all",
                                 "--workers", "0", "--json", "--report", str(report)])
    assert result.exit_code == 0, result.output
    scores, threshold = json.loads(result.stdout)["scores"], json.loads(result.stdout)["at_threshold"]["threshold"]
    text = report.read_text()
    page = Page(text)
    assert all(s.startswith("data:image/") for s in page.sources)
    assert sum(i["alt"] in ("roc", "pr", "confusion", "scores", "reliability") for i in page.images) == 5
    real_as_fake = sorted((s for s in scores if s["label"] == 0 and s["p_fake"] >= threshold), key=lambda s: -s["p_fake"])
    fake_as_real = sorted((s for s in scores if s["label"] == 1 and s["p_fake"] < threshold), key=lambda s: s["p_fake"])
    shown = re.findall(r"<h3>([^<]+): P\(fake\)", text)
    assert shown == [s["video"] for s in real_as_fake[:6] + fake_as_real[:6]]
    assert sum(i["alt"].startswith("faces ") for i in page.images) == SEQ_LEN * len(shown)
