"""Self-blended training: the blend itself, the landmark sidecars it reads, and real --self-blend runs."""

import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from conftest import FRAMES, IMAGE_SIZE, SEQ_LEN, tiny_config
from deepfake_cli.checkpoint import read_checkpoint
from deepfake_cli.cli import app
from deepfake_cli.data import (BLEND_FOLDER, MixedDataset, Sample, SelfBlendDataset, SequenceDataset, augment, load_vectors,
                               pair_groups, scan)
from deepfake_cli.crop import CropSpec, resize_square
from deepfake_cli.errors import DeepfakeError
from deepfake_cli.evaluate import evaluate
from deepfake_cli.faces import LANDMARK_PAIRS
from deepfake_cli.inputs import InputSpec
from deepfake_cli.layout import landmarks_path
from deepfake_cli.model import DeepfakeDetector
from deepfake_cli.selfblend import BLEND_RATIOS, BlendDraw, SelfBlend, alter, crop_mask, hull_mask
from deepfake_cli.train import TrainConfig, train

runner = CliRunner()
SIZE = 64


def sequence(extracted, video="000", size=SIZE, frames=SEQ_LEN):
    """A real extracted sequence at `size` px and its sidecar landmarks in those pixels."""
    images = np.stack([resize_square(cv2.imread(str(extracted / "original" / f"{video}_{i}.jpg")), size)
                       for i in range(frames)])
    points = np.load(landmarks_path(extracted, "original", video)).astype(np.float32)[:frames] * size / 256
    return images, points


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel of `mask` (0 inside)."""
    return cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)


def test_extract_writes_each_crops_landmarks_in_crop_pixels(extracted):
    for sample in scan(extracted, SEQ_LEN):
        points = np.load(landmarks_path(extracted, sample.folder, sample.video))
        assert points.dtype == np.float16 and points.shape == (FRAMES, 468, 2)
        assert points.min() >= -5 and points.max() <= 256 + 5  # the face fills the crop, its margin around it
        for i in (0, FRAMES - 1):  # the same face as the frame's 5 distances: the same ratios between them
            a, b = np.array(LANDMARK_PAIRS).T
            in_crop = np.linalg.norm(points[i, a].astype(np.float64) - points[i, b], axis=1)
            vector = np.load(sample.stem(extracted, i).with_suffix(".npy"))
            assert in_crop / in_crop[0] == pytest.approx(vector / vector[0], rel=0.02)


def test_the_mask_stays_on_the_face_and_peaks_at_the_blend_ratio(extracted):
    frames, points = sequence(extracted)
    hull = hull_mask(points[0], SIZE)
    assert 0.2 < hull.mean() < 0.8
    ratios = set()
    for seed in range(30):
        fakes, masks = SelfBlend(CropSpec(), flicker=0.0)(frames, points, np.random.default_rng(seed))
        peak = masks.max(axis=(1, 2))
        assert peak == pytest.approx(np.full(SEQ_LEN, peak[0]), abs=1e-5)  # one ratio for the whole sequence
        ratios.add(round(float(peak[0]), 4))
        # The move (x 3%, y 1.5%, scale 5%), the elastic wobble and the feathering reach a few pixels past the
        # hull; never a fifth of the crop.
        assert masks[0][distance_outside(hull) > 0.2 * SIZE].max() == 0
        assert (masks[0] * (hull == 0)).sum() < 0.25 * masks[0].sum()
    assert ratios == set(BLEND_RATIOS)


def test_masks_for_inner_face_swaps_without_the_forehead_and_for_the_mouth_alone(extracted):
    _, points = sequence(extracted, frames=1)
    whole, inner, no_forehead = (hull_mask(points[0], SIZE, forehead, extent)
                                 for forehead, extent in ((True, 1.0), (True, 0.7), (False, 1.0)))
    assert (inner <= whole).all() and inner.sum() / whole.sum() == pytest.approx(0.49, abs=0.06)
    assert (no_forehead <= whole).all() and 0.5 < no_forehead.sum() / whole.sum() < 0.95
    rows = np.nonzero(whole.any(1))[0]
    assert not no_forehead[rows[0]].any() and no_forehead[rows[-1]].any()  # the top goes, the chin stays
    mouth = hull_mask(points[0], SIZE, extent=1.5, mouth=True)  # lip-sync fakes: the mouth alone
    ys, xs = np.nonzero(mouth)
    assert (mouth <= whole).all() and 0.02 < mouth.sum() / whole.sum() < 0.25
    assert ys.mean() > np.nonzero(whole)[0].mean() + 0.1 * SIZE  # well below the face's centre


def test_pixels_the_mask_leaves_out_are_the_real_frame_or_its_altered_copy(extracted):
    frames, points = sequence(extracted)
    untouched = 0
    for seed in range(10):
        fakes, masks = SelfBlend(CropSpec())(frames, points, np.random.default_rng(seed))
        outside = masks == 0
        same = (fakes == frames).all(-1)
        assert outside.any() and (fakes != frames).any()
        untouched += same[outside].all()  # the altered copy was pasted inside: the rest is the real frame
    assert 0 < untouched < 10  # either side gets the change, at random


def test_one_draw_serves_the_whole_sequence_and_flicker_varies_its_strength(extracted):
    frame, points = sequence(extracted, frames=1)
    still = np.repeat(frame, 8, axis=0), np.repeat(points, 8, axis=0)  # one frame, held: only the blend can change
    fakes, masks = SelfBlend(CropSpec(), flicker=0.0)(*still, np.random.default_rng(3))
    other, _ = SelfBlend(CropSpec(), flicker=0.0)(*still, np.random.default_rng(4))
    drift = [np.abs(fakes[i].astype(int) - fakes[0]).mean() for i in range(1, 8)]
    assert max(drift) < 1.0 < np.abs(other[0].astype(int) - fakes[0]).mean()
    _, flickering = SelfBlend(CropSpec(), flicker=1.0)(*still, np.random.default_rng(3))
    peaks = flickering.max(axis=(1, 2))
    assert peaks.max() <= max(BLEND_RATIOS) + 1e-6 and peaks.max() - peaks.min() > 0.05


def test_the_altered_copy_changes_colour_alone_or_texture_too_and_a_mouth_is_reopened_and_softened(extracted):
    frame = sequence(extracted, frames=1)[0][0]
    draw = BlendDraw.draw(np.random.default_rng(0), 1)
    plain = replace(draw, mouth=False, hue=0.0, saturation=1.0, brightness=0.0, contrast=1.0, rgb_shift=np.zeros(3))
    # The gain scales each channel; without a texture step, equal pixels stay equal (a colour change alone).
    gained = alter(frame, replace(plain, gain=np.array([0.8, 1.0, 1.2]), texture=False), 0.0).astype(int)
    assert np.abs(gained - np.clip(frame * np.array([0.8, 1.0, 1.2]), 0, 255)).max() <= 2
    flat = frame.reshape(-1, 3)
    _, first, codes = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    assert (gained.reshape(-1, 3) == gained.reshape(-1, 3)[first[codes.ravel()]]).all()
    # With the texture step, a downscale smooths the copy: fine detail (the Laplacian's energy) drops.
    detail = lambda image: cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    coarse = alter(frame, replace(plain, gain=np.ones(3), texture=True, downscale=3), 0.0)
    assert detail(coarse) < 0.5 * detail(frame)
    # A mouth blend's copy: stretched about the given row (which stays put, the rows away from it move), softened.
    stripes = np.zeros((SIZE, SIZE, 3), np.uint8)
    stripes[::8] = 255
    mouth = replace(plain, mouth=True, gain=np.ones(3), stretch=1.2, soften=0.0)
    opened = alter(stripes, mouth, 40.0)
    assert (opened[40] == 255).all() and (opened[56] < 128).all()  # input row 53.3, between stripes
    assert detail(alter(stripes, replace(mouth, stretch=1.0, soften=1.5 / SIZE), 40.0)) < 0.5 * detail(stripes)


def test_half_the_real_videos_are_altered_over_the_whole_frame_as_a_blend_alters_its_copy(extracted):
    frames, _ = sequence(extracted)
    recipe, altered = SelfBlend(CropSpec()), 0
    for seed in range(40):
        out = recipe.alter_whole(frames, np.random.default_rng(seed))
        if out is frames:  # left as it is
            continue
        altered += 1
        assert out.shape == frames.shape and out.dtype == np.uint8
        change = np.abs(out.astype(int) - frames).max(-1)  # (T, S, S)
        assert (change > 0).mean() > 0.7  # the whole frame, not a masked part of it: no seam to find
        quarters = change.reshape(SEQ_LEN, 2, SIZE // 2, 2, SIZE // 2).mean(axis=(0, 2, 4))
        assert (quarters > 1).all()
        # one draw for the whole sequence: every frame is changed alike (its mean colour moves the same way)
        shift = out.astype(float).mean(axis=(1, 2)) - frames.astype(float).mean(axis=(1, 2))  # (T, 3)
        assert np.abs(shift - shift.mean(0)).max() < 3 + 0.2 * np.abs(shift.mean(0)).max()
    assert 10 < altered < 30  # about half (WHOLE_ALTERED)


def test_without_landmarks_the_mask_is_the_face_box_the_crop_implies():
    for crop, face in ((CropSpec(margin=0.2), 1 / 1.4), (CropSpec(margin=0.5), 0.5)):
        mask = crop_mask(crop, 100)
        ys, xs = np.nonzero(mask)
        assert (ys.max() - ys.min() + 1) == pytest.approx(100 * face, abs=2)
        assert (xs.mean(), ys.mean()) == pytest.approx((50, 50), abs=1)
        ys, xs = np.nonzero(crop_mask(crop, 100, mouth=True))  # the lips: a quarter of the face below its centre
        assert (xs.mean(), ys.mean()) == pytest.approx((50, 50 + 25 * face), abs=1)


def test_a_self_blend_dataset_pairs_each_real_video_with_its_blend(extracted):
    reals = [s for s in scan(extracted, SEQ_LEN) if s.label == 0]
    inputs = InputSpec(image_size=IMAGE_SIZE, seq_len=SEQ_LEN)
    blends, plain = SelfBlendDataset(extracted, reals, inputs), SequenceDataset(extracted, reals, inputs)
    assert len(blends) == 2 * len(reals) and all(blends.has_landmarks)
    real, _, label_real = blends[2]
    fake, _, label_fake = blends[3]
    assert (label_real.item(), label_fake.item()) == (0.0, 1.0)
    assert (real == plain[1][0]).all() and (fake != real).any()
    assert (blends[3][0] == fake).all()  # validation's blends are fixed
    # In training, (seed, epoch, video) seeds the shared augmentation of the pair and, with one more number,
    # the blend (1) or the real video's whole-frame alteration (2): a worker or --resume draws the same.
    augmented = SelfBlendDataset(extracted, reals, inputs, augment=True)
    frames, vectors = plain.frames(reals[1]), load_vectors(extracted, reals[1], SEQ_LEN)
    blend, _ = blends.recipe(frames, blends.landmarks(reals[1]), np.random.default_rng([8, 2, 1, 1]))
    real = blends.recipe.alter_whole(frames, np.random.default_rng([8, 2, 1, 2]))
    assert real is not frames  # this draw alters the real video
    for key, expected in (((2, 8, 2), real), ((3, 8, 2), blend)):
        images, _, _ = augmented[key]
        want, _, _ = augment(expected, vectors, np.random.default_rng([8, 2, 1]))
        assert (images.permute(0, 2, 3, 1).numpy() == want).all()


def test_with_a_mask_grid_each_item_carries_the_share_of_every_cell_that_was_blended(extracted):
    reals = [s for s in scan(extracted, SEQ_LEN) if s.label == 0]
    inputs = InputSpec(image_size=96, seq_len=SEQ_LEN)
    blends = SelfBlendDataset(extracted, reals, inputs, augment=True)
    blends.mask_grid = 3
    frames, vectors = blends.frames(reals[1]), load_vectors(extracted, reals[1], SEQ_LEN)
    blend, masks = blends.recipe(frames, blends.landmarks(reals[1]), np.random.default_rng([7, 2, 1, 1]))
    _, _, _, real_cells = blends[2, 7, 2]
    images, _, _, cells = blends[3, 7, 2]
    assert real_cells.shape == cells.shape == (SEQ_LEN, 3, 3) and not real_cells.any()
    # The masks are mirrored and cropped with the frames, then averaged over each cell of a 3 x 3 grid.
    want_images, _, want_masks = augment(blend, vectors, np.random.default_rng([7, 2, 1]), masks)
    assert (images.permute(0, 2, 3, 1).numpy() == want_images).all()
    assert cells.numpy() == pytest.approx(want_masks.reshape(SEQ_LEN, 3, 32, 3, 32).mean((2, 4)), abs=1e-5)
    assert 0 < cells.max() <= 1 and cells[:, 1, 1].min() > cells.min()  # the face is in the middle cell
    without = SelfBlendDataset(extracted, reals, inputs, augment=True)
    assert len(without[3, 7, 2]) == 3  # validation's items: no masks


def test_blend_fakes_add_each_real_videos_blend_beside_the_datas_own_fakes(extracted, tmp_path):
    samples = scan(extracted, SEQ_LEN)
    reals = [s for s in samples if s.label == 0]
    mixed = MixedDataset(extracted, samples, InputSpec(image_size=64, seq_len=SEQ_LEN), augment=True)
    mixed.mask_grid = 2
    assert len(mixed) == len(samples) + len(reals)
    assert mixed.samples[len(samples):] == [Sample(BLEND_FOLDER, s.video, 1) for s in reals]
    # Each blend joins its real video's --pairs group, and so its augmentation draw.
    groups = pair_groups(mixed.samples)
    for j, real in enumerate(reals):
        assert any(samples.index(real) in g and len(samples) + j in g for g in groups)
    blend = mixed[len(samples), 3, 1]
    own_fake = mixed[next(i for i, s in enumerate(samples) if s.label == 1), 3, 1]
    real = mixed[samples.index(reals[0]), 3, 1]
    assert blend[2] == 1 and 0 < blend[3].max() <= 1  # where it was blended
    assert own_fake[2] == 1 and (own_fake[3] == -1).all()  # not known: no mask loss on it
    assert real[2] == 0 and not real[3].any()
    # The blend --self-blend's recipe makes of that video, from the item's own stream.
    alone = SelfBlendDataset(extracted, reals, InputSpec(image_size=64, seq_len=SEQ_LEN), augment=False)
    frames, masks = alone._blend(reals[0], alone.frames(reals[0]), [3, 1, len(samples)])
    plain = MixedDataset(extracted, samples, InputSpec(image_size=64, seq_len=SEQ_LEN), augment=False)
    assert (plain[len(samples), 3, 1][0].permute(0, 2, 3, 1).numpy() == frames).all()

    result = train(tiny_config(extracted, tmp_path / "run", blend_fakes=True, pairs=False))
    meta = read_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    n_real, n_fake = meta["split"]["train"]["real"], meta["split"]["train"]["fake"]
    assert meta["pos_weight"] == pytest.approx(n_real / (n_fake + n_real)) and meta["self_blend"]["landmarks"] == n_real
    assert result.history and "mask_head" in read_checkpoint(tmp_path / "run" / "last.pt")


@pytest.fixture(scope="module")
def real_only(extracted, tmp_path_factory):
    """Data holding real videos alone: `extract`'s original/ linked in (its sidecars found through the link)."""
    data = tmp_path_factory.mktemp("real-only")
    (data / "original").symlink_to(extracted / "original")
    return data


def test_self_blend_trains_on_real_videos_alone_and_shows_what_it_learns_from(real_only, extracted, clips, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(real_only), "--run-dir", str(run), "--self-blend", "--save-examples", "2",
                                 "--epochs", "1", "--batch-size", "4", "--frames", str(SEQ_LEN), "--image-size",
                                 str(IMAGE_SIZE), "--no-pretrained", "--workers", "0"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "masks from Face Mesh landmarks for" in said and "ellipse" not in said
    meta = read_checkpoint(run / "best.pt")["meta"]
    n_train = meta["split"]["train"]["real"]
    assert meta["self_blend"] == {"landmarks": n_train, "crop_ellipse": 0}
    assert meta["split"]["train"]["fake"] == meta["split"]["val"]["fake"] == 0 and meta["pos_weight"] == 1.0
    assert meta["select"] == "loss"  # not AUC on the recipe's own blends, which rises as the model narrows to them
    # The mask head trained beside the detector (1 x 1 cells at 32 px) is kept beside its keys, for reports.
    assert "a mask head learns where they were blended (weight 1)" in said
    best = read_checkpoint(run / "best.pt")
    assert set(best["model"]) == set(DeepfakeDetector(frame_head=True).state_dict())
    assert best["mask_head"]["weight"].shape == read_checkpoint(run / "last.pt")["mask_head"]["weight"].shape == (1, 1280, 1, 1)
    # A report shows the blend region it predicts, beside Grad-CAM.
    result = runner.invoke(app, ["predict", str(clips["fake"]), "--model", str(run / "best.pt"), "--report",
                                 str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert page.count('alt="blend region (mask head)') == page.count('alt="Grad-CAM') == SEQ_LEN
    examples = cv2.imread(str(run / "self-blend-examples.png"))
    scale = 192 // IMAGE_SIZE
    assert examples.shape == (28 + 2 * IMAGE_SIZE * scale, 3 * IMAGE_SIZE * scale, 3)
    # The model is an ordinary detector: evaluate scores the real videos and every manipulation it never saw.
    report = evaluate(extracted, run / "best.pt", split="all", workers=0)
    assert {r["method"] for r in report["per_method"]} == {"original", "FaceSwap", "SelfBlend"}


def test_fakes_in_the_data_are_never_trained_on_and_are_scored_as_unseen(extracted, tmp_path):
    """Data extracted before landmark sidecars: the masks fall back to the crop's face ellipse, and say so."""
    data = tmp_path / "data"
    shutil.copytree(extracted, data, ignore=shutil.ignore_patterns("landmarks"))
    result = train(tiny_config(data, tmp_path / "run", self_blend=True, val_fraction=0.4, mask_loss=0))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train"] and all(key.startswith("original/") for key in split["train"])
    unseen = {key.split("/")[0] for key in split["val"]} - {"original"}
    assert unseen and set(result.history[0]["unseen_methods"]) == unseen
    # Scored as evaluate scores those videos with the epoch's model: its fakes against its real videos.
    scores = evaluate(data, tmp_path / "run" / "best.pt", split="val", workers=0)["scores"]
    labels, probs = np.array([s["label"] for s in scores]), np.array([s["p_fake"] for s in scores])
    assert result.history[0]["unseen_auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)
    meta = read_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert meta["self_blend"] == {"landmarks": 0, "crop_ellipse": len(split["train"])}
    assert "unseen_auc" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "mask_head" not in read_checkpoint(tmp_path / "run" / "last.pt")  # --mask-loss 0: no mask head


def test_the_mask_head_is_on_with_self_blend(tmp_path):
    assert TrainConfig(data=tmp_path, self_blend=True).model.mask_loss == 1 and TrainConfig(data=tmp_path).model.mask_loss == 0


def test_self_blend_refuses_what_it_cannot_do(extracted, tmp_path):
    fakes_only = tmp_path / "fakes"
    fakes_only.mkdir()
    (fakes_only / "FaceSwap").symlink_to(extracted / "FaceSwap")
    with pytest.raises(DeepfakeError, match="--self-blend trains on real videos, and the train split has none"):
        train(tiny_config(fakes_only, tmp_path / "r", self_blend=True))
    for overrides, message in ((dict(freeze_backbone=True), "leave out --freeze-backbone"),
                               (dict(batch_size=3), "--batch-size must be even"),
                               (dict(self_blend=False, save_examples=2), "add --self-blend"),
                               (dict(self_blend=False, mask_loss=1.0), "add --self-blend")):
        with pytest.raises(DeepfakeError, match=message):
            tiny_config(extracted, tmp_path / "r", **{"self_blend": True, **overrides})
    result = runner.invoke(app, ["train", str(extracted), "--run-dir", str(tmp_path / "r"), "--self-blend",
                                 "--batch-size", "5"])
    assert result.exit_code == 2 and "--batch-size must be even" in result.output and "Traceback" not in result.output
