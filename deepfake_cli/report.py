"""`--report FILE`: one self-contained HTML page, for a reviewer deciding about a clip or a model.

Everything is inside the file: JPEG thumbnails as data URIs, charts as inline SVG, a few lines of
plain JavaScript that sort the batch table. Nothing is fetched, so it opens offline in any browser
and can be mailed or archived as it is. Thumbnails are small JPEGs: a 100-clip report stays near
10 MB (benchmarks/bench_report.py).
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from deepfake_cli import __version__
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.files import atomic_write_bytes

THUMB = 112  # px: the side of a face thumbnail
JPEG_QUALITY = 80
HEAT_OPACITY = 0.45
GALLERY = 6  # evaluate: the most confident mistakes shown of each kind
COLOURS = {"fake": "#c0392b", "uncertain": "#b9770e", "real": "#1e8449"}


def check_writable(path: Path) -> None:
    """Fail now, before any clip is scored, where `path` cannot be written."""
    if path.is_dir():
        raise DeepfakeError(f"--report {path}: is a folder; give a file name such as report.html")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DeepfakeError(f"--report {path}: cannot write there ({e.strerror}); choose another path") from None


# ---- pieces ---------------------------------------------------------------------------------


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def jpeg_uri(image: np.ndarray, side: int = THUMB) -> str:
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {small.shape} image")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def overlay(crop: np.ndarray, heat: np.ndarray, side: int = THUMB) -> np.ndarray:
    """A (g, g) map in [0, 1] over a BGR crop, as a colour wash (red: high)."""
    face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    wash = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    colours = cv2.applyColorMap(np.uint8(255 * np.clip(wash, 0, 1)), cv2.COLORMAP_JET)
    return cv2.addWeighted(face, 1 - HEAT_OPACITY, colours, HEAT_OPACITY, 0)


def faces_strip(faces: list[np.ndarray], heatmaps: dict[str, np.ndarray], captions: list[str]) -> str:
    """The faces in a row, with a row per heatmap kind under them."""
    kinds = {"gradcam": "Grad-CAM (what pushed the score to fake)", "mask": "blend region (mask head)"}
    rows = [("faces", [jpeg_uri(f) for f in faces])]
    rows += [(kinds.get(kind, kind), [jpeg_uri(overlay(f, h), THUMB) for f, h in zip(faces, maps)])
             for kind, maps in heatmaps.items()]
    out = []
    for title, uris in rows:
        cells = "".join(f'<figure><img src="{u}" alt="{_esc(title)} {i + 1}" width="{THUMB}" height="{THUMB}">'
                        f"<figcaption>{_esc(c)}</figcaption></figure>" for i, (u, c) in enumerate(zip(uris, captions)))
        out.append(f'<div class="strip"><div class="strip-title">{_esc(title)}</div><div class="faces">{cells}</div></div>')
    return "".join(out)


def timeline_svg(windows: list[dict], duration: float, threshold: float, top: int) -> str:
    """Each window's frames on the clip's time axis: the frame head's P(fake) where the model has one,
    else the window's own score at each of its frames; the threshold dashed."""
    width, height, left, bottom = 720, 180, 40, 24
    plot_w, plot_h = width - left - 10, height - bottom - 10
    duration = max(duration, max((max(w["times"]) for w in windows), default=1.0), 1e-6)

    def x(t: float) -> float:
        return left + plot_w * t / duration

    def y(p: float) -> float:
        return 10 + plot_h * (1 - p)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             'aria-label="P(fake) over the clip">',
             f'<rect x="{left}" y="10" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for p in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end" font-size="11">{p:g}</text>')
    for k in range(6):
        t = duration * k / 5
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" font-size="11">{t:.1f}s</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                 'stroke="#888" stroke-dasharray="4 3"><title>threshold</title></line>')
    for w in sorted(windows, key=lambda w: w["window"] == top):  # the top window drawn last, on top
        values = w["frame_p_fake"] or [w["p_fake"]] * len(w["times"])
        colour, opacity = ("#c0392b", 1.0) if w["window"] == top else ("#2e86c1", 0.55)
        points = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in zip(w["times"], values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-opacity="{opacity}" '
                     f'stroke-width="1.5"><title>window {w["window"] + 1}: P(fake) {w["p_fake"]:.3f}</title></polyline>')
        parts += [f'<circle cx="{x(t):.1f}" cy="{y(p):.1f}" r="2.5" fill="{colour}" fill-opacity="{opacity}"/>'
                  for t, p in zip(w["times"], values)]
    parts.append("</svg>")
    return "".join(parts)


def _facts(video: dict) -> str:
    if not video:
        return ""
    rotation = f", rotated {video['rotation']}&deg;" if video.get("rotation") else ""
    return (f"{video['duration_s']:.1f} s, {video['width']}x{video['height']}{rotation}, "
            f"{_esc(video.get('codec') or '?')}, {video['fps']:g} fps")


def _page(title: str, body: str) -> bytes:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="deepfake-cli {__version__}">
<title>{_esc(title)}</title><style>{CSS}</style></head>
<body><main>{body}</main><script>{SORT_SCRIPT}</script></body></html>
""".encode()


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;background:#fff;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 6px;border-top:1px solid #ddd;padding-top:18px}
.muted{color:#666} .label{font-weight:600;padding:1px 8px;border-radius:10px;color:#fff}
table{border-collapse:collapse;margin:10px 0} th,td{padding:4px 10px;border-bottom:1px solid #e5e5e5;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
table.sortable th{cursor:pointer;user-select:none} table.sortable th::after{content:" \\2195";color:#aaa}
.strip{margin:8px 0} .strip-title{font-size:12px;color:#555;margin-bottom:2px}
.faces{display:flex;flex-wrap:wrap;gap:4px} figure{margin:0;text-align:center}
figcaption{font-size:11px;color:#555} img{display:block;border-radius:3px}
.reasons{color:#b9770e} .plots{display:flex;flex-wrap:wrap;gap:8px} .plots img{width:360px;height:auto;border:1px solid #eee}
"""

# Sorts a table.sortable by the clicked column: numbers by value (a cell's data-sort first), text by text.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.order !== "up"; th.dataset.order = up ? "up" : "down";
      function key(row) { var c = row.cells[column]; var v = c.dataset.sort !== undefined ? c.dataset.sort : c.textContent;
        var n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; }
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  table.dataset.ready = "1";
});
"""


def _label(label: str) -> str:
    return f'<span class="label" style="background:{COLOURS.get(label, "#777")}">{_esc(label)}</span>'


# ---- predict --------------------------------------------------------------------------------


def predict_report(verdicts: list, model_description: str, path: Path) -> None:
    """The batch table (clip, P(fake), label, people, status; sortable, each row a link), then a
    section per clip: its verdict, the video's facts, the score over time and the top window's faces
    with their heatmaps."""
    rows, sections = [], []
    for i, v in enumerate(verdicts):
        anchor, name = f"clip-{i + 1}", Path(v.path).name
        ok = v.status == "ok"
        p = f"{v.p_fake:.3f}" if ok else "-"
        rows.append(f'<tr><td><a href="#{anchor}">{_esc(name)}</a></td><td data-sort="{v.p_fake if ok else -1}">{p}</td>'
                    f'<td>{_label(v.label) if ok else "-"}</td><td>{len(v.people) if ok else "-"}</td>'
                    f"<td>{_esc(v.status)}</td></tr>")
        sections.append(_clip_section(v, anchor))
    table = ("<table class=\"sortable\"><thead><tr><th>clip</th><th>P(fake)</th><th>verdict</th><th>people</th>"
             f"<th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    scored = sum(v.status == "ok" for v in verdicts)
    body = (f"<h1>deepfake predict: {len(verdicts)} clip{'s' * (len(verdicts) != 1)}</h1>"
            f'<p class="muted">{scored} scored, by {_esc(model_description)}. Click a column to sort.</p>'
            + table + "".join(sections))
    atomic_write_bytes(path, _page("deepfake predict report", body))


def _clip_section(v, anchor: str) -> str:
    head = f'<h2 id="{anchor}">{_esc(Path(v.path).name)}</h2><p class="muted">{_esc(v.path)}</p>'
    if v.status != "ok":
        return head + f"<p>Not scored: <b>{_esc(v.status)}</b>: {_esc(v.reason or '')}</p><p>{_facts(v.video)}</p>"
    verdict = (f"<p>{_label(v.label)} P(fake) <b>{v.p_fake:.3f}</b> (threshold {v.threshold:.2f}; the model's own score "
               f"{v.raw_p_fake:.3f}); {v.windows} windows, {v.faces} faces; people found: {len(v.people)}"
               + (" (the most suspicious is scored)" if len(v.people) > 1 else "") + "</p>")
    if len(v.models) > 1:
        verdict += "<p>models: " + ", ".join(f"{_esc(Path(m['model']).name)} {m['p_fake']:.3f}" for m in v.models) + "</p>"
    if v.reasons:
        verdict += '<p class="reasons">uncertain: ' + _esc("; ".join(v.reasons)) + "</p>"
    out = head + verdict + f"<p>{_facts(v.video)}</p>"
    d = v.detail
    if d is None:
        return out
    out += ("<h3>P(fake) over the clip</h3><p class=\"muted\">Each window samples the whole clip; a line per window "
            + ("(each frame by the frame head), " if d["frame_p_fake"] is not None else "(its score at its frames), ")
            + "the most suspicious in red.</p>"
            + timeline_svg(d["windows"], v.video.get("duration_s", 0.0), v.threshold, d["top_window"]))
    captions = [("-" if t is None else f"{t:.1f}s") + ("" if d["frame_p_fake"] is None else f" {d['frame_p_fake'][i]:.2f}")
                for i, t in enumerate(d["times"])]
    note = "" if d["heatmaps"] else " (no heatmap: an exported .onnx model has no gradients; report with the .pt)"
    out += (f"<h3>The most suspicious window (window {d['top_window'] + 1})</h3><p class=\"muted\">Each face with its time"
            + (" and frame P(fake)" if d["frame_p_fake"] is not None else "") + f"{note}.</p>"
            + faces_strip(d["faces"], d["heatmaps"], captions))
    return out


# ---- evaluate -------------------------------------------------------------------------------


def evaluate_report(result: dict, data: Path, plots: dict[str, bytes], gallery: dict[str, list[dict]], path: Path) -> None:
    """The metrics, the plots, the per-method table, then the most confident mistakes of each kind
    (`gallery`: {"real called fake": [...], "fakes called real": [...]}, each item a video with its
    score, faces and heatmaps)."""
    at_t, at_half = result["at_threshold"], result["at_0.5"]

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    metrics = "".join(f"<tr><td>{k}</td><td>{fmt(at_t[k])}</td><td>{fmt(at_half[k])}</td></tr>"
                      for k in ("accuracy", "f1", "precision", "recall", "auc", "ap", "eer"))
    calibration = result["calibration"]
    metrics += (f"<tr><td>calibration: ECE, Brier</td><td>{calibration['ece']:.3f}, {calibration['brier']:.3f}</td><td></td></tr>"
                f"<tr><td>ECE by chance alone (9 in 10 below)</td><td>{calibration['ece_if_calibrated']:.3f}</td><td></td></tr>")
    methods = "".join(f"<tr><td>{_esc(r['method'])}</td><td>{r['label']}</td><td>{r['n']}</td><td>{fmt(r['accuracy'])}</td>"
                      f"<td>{fmt(r['mean_p_fake'])}</td><td>{fmt(r['auc_vs_real'])}</td></tr>" for r in result["per_method"])
    body = (f"<h1>deepfake evaluate: {result['n']} videos</h1>"
            f'<p class="muted">{_esc(result["split"])} split of {_esc(data)}, scored by {_esc(result["checkpoint"])}</p>'
            f"<table><thead><tr><th></th><th>threshold {at_t['threshold']:.3f}</th><th>threshold 0.5</th></tr></thead>"
            f"<tbody>{metrics}</tbody></table>"
            "<h2>Per method</h2><table class=\"sortable\"><thead><tr><th>method</th><th>label</th><th>videos</th>"
            "<th>accuracy</th><th>mean P(fake)</th><th>AUC vs real</th></tr></thead>"
            f"<tbody>{methods}</tbody></table>"
            '<h2>Plots</h2><div class="plots">'
            + "".join(f'<img src="{png_uri(png)}" alt="{_esc(name)}">' for name, png in plots.items()) + "</div>")
    for kind, items in gallery.items():
        body += f"<h2>The most confident mistakes: {_esc(kind)}</h2>"
        if not items:
            body += "<p>None.</p>"
        for item in items:
            captions = [f"frame {i}" for i in range(len(item["faces"]))]
            body += (f"<h3>{_esc(item['video'])}: P(fake) {item['p_fake']:.3f}</h3>"
                     + faces_strip(item["faces"], item["heatmaps"], captions))
    atomic_write_bytes(path, _page("deepfake evaluate report", body))
