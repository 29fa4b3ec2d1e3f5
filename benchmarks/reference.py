"""The reference notebook pipeline, re-created as faithfully as ../shared/REFERENCE.md and the
notebook allow: the baselines our figures are ratios against. Not for use outside benchmarks.

torch and mediapipe are imported inside the functions, so bench_extract does not pay for torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# REFERENCE.md: d(33,263), d(61,291), d(1,199), d(33,61), d(263,291), in source-frame pixels.
PAIRS = ((33, 263), (61, 291), (1, 199), (33, 61), (263, 291))


# ---- preprocessing ("Preprocessing as the notebooks did it") ------------------------------------


def reference_face_mesh():
    """MediaPipe legacy Face Mesh, static images, one face; one instance serves every video.

    Set up as deepfake_cli's FaceAnalyzer is (one blank frame through it, TFLite's start-up
    logging silenced), so both sides pay the same start-up.
    """
    import mediapipe as mp

    from deepfake_cli.faces import quiet_native_stderr

    with quiet_native_stderr():
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
        mesh.process(np.zeros((64, 64, 3), np.uint8))
    return mesh


def reference_extract_video(path: Path, out: Path, mesh, frames: int = 16, candidates: int = 60,
                            margin: int = 20, size: int = 256) -> int:
    """Write <out>/<stem>_<i>.jpg/.npy for the first `frames` candidate frames with a face.

    60 candidates evenly spaced over the video, read in order with cap.read(); reading stops
    once 16 faces are kept, so with faces everywhere only the first quarter is decoded.
    Returns how many frames were written.
    """
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, total - 1, candidates, dtype=int).tolist())
    saved, index = 0, 0
    while saved < frames:
        ok, frame = cap.read()
        if not ok:
            break
        if index in wanted:
            result = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if result.multi_face_landmarks:
                height, width = frame.shape[:2]
                points = np.array([(p.x * width, p.y * height) for p in result.multi_face_landmarks[0].landmark])
                x0, y0 = np.maximum(points.min(0) - margin, 0).astype(int)
                x1, y1 = np.minimum(points.max(0) + margin, (width, height)).astype(int)
                crop = cv2.resize(frame[y0:y1, x0:x1], (size, size))
                vector = np.array([np.linalg.norm(points[a] - points[b]) for a, b in PAIRS])
                cv2.imwrite(str(out / f"{path.stem}_{saved}.jpg"), crop)
                np.save(out / f"{path.stem}_{saved}.npy", vector)
                saved += 1
        index += 1
    cap.release()
    return saved


# ---- training and evaluation (the notebook's DeepfakeDataset, model and loop) -------------------


class ReferenceDataset:
    """The notebook's DeepfakeDataset reader: per sample, 16 x (cv2.imread, resize to 256, ToTensor) + np.load.

    Map-style (len + getitem), which is all DataLoader needs; `samples` are (folder path, video id, label).
    """

    def __init__(self, samples: list[tuple[str, str, int]], sequence_length: int = 16, size: int = 256):
        from torchvision import transforms

        self.videos, self.sequence_length, self.size = samples, sequence_length, size
        self.transform = transforms.Compose([transforms.ToTensor()])

    @classmethod
    def from_folder(cls, base_path: Path, keys: set[str] | None = None, sequence_length: int = 16,
                    size: int = 256) -> "ReferenceDataset":
        """Every video of `base_path` with enough frames (the notebook's _collect_video_ids), or those in `keys`."""
        samples = []
        for folder in sorted(os.listdir(base_path)):
            folder_path = os.path.join(base_path, folder)
            if folder.startswith(".") or not os.path.isdir(folder_path):
                continue  # our manifest folder; the notebook would crash on it (REFERENCE.md)
            counts: dict[str, int] = {}
            for file in os.listdir(folder_path):
                if file.endswith(".jpg"):
                    vid = "_".join(file.split("_")[:-1])
                    counts[vid] = counts.get(vid, 0) + 1
            samples += [(folder_path, vid, 0 if folder == "original" else 1) for vid, n in sorted(counts.items())
                        if n >= sequence_length and (keys is None or f"{folder}/{vid}" in keys)]
        return cls(samples, sequence_length, size)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, idx: int):
        import torch

        folder, video_id, label = self.videos[idx]
        imgs, lmks = [], []
        for i in range(self.sequence_length):
            img = cv2.imread(os.path.join(folder, f"{video_id}_{i}.jpg"))
            img = cv2.resize(img, (self.size, self.size))
            imgs.append(self.transform(img))  # (3, 256, 256) float 0..1, BGR
            lmks.append(torch.tensor(np.load(os.path.join(folder, f"{video_id}_{i}.npy")), dtype=torch.float32))
        return torch.stack(imgs), torch.stack(lmks), torch.tensor(label, dtype=torch.float32)


def reference_model():
    """The notebook's model: deepfake_cli's module with the last-step read-out, then a Sigmoid head.

    Same layers and weights layout; the notebook's fc.4 Sigmoid is applied in `reference_forward`.
    Random weights: ImageNet weights cannot be downloaded here and do not change the speed.
    """
    from deepfake_cli.model import DeepfakeDetector

    return DeepfakeDetector(readout="last")


def reference_forward(model, imgs, lmks):
    import torch

    return torch.sigmoid(model(imgs, lmks))


def reference_loader(dataset: ReferenceDataset, shuffle: bool):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=4, shuffle=shuffle)  # the notebook's: num_workers=0, fp32


def reference_train_steps(dataset: ReferenceDataset, device, steps: int) -> dict:
    """The notebook's training loop (Adam 1e-4, BCELoss) for 1 warm-up step + `steps` timed steps.

    Cycles through the data if it has fewer batches. Returns clips/s over the timed steps.
    """
    import time

    import torch

    model = reference_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = torch.nn.BCELoss()
    model.train()
    done, clips, started = 0, 0, None
    while done < steps + 1:
        for imgs, lmks, labels in reference_loader(dataset, shuffle=True):
            imgs, lmks, labels = imgs.to(device), lmks.to(device), labels.to(device)
            preds = reference_forward(model, imgs, lmks)
            loss = criterion(preds, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the notebook's running_loss += loss.item(): also a device sync
            done += 1
            if done == 1:
                started = time.perf_counter()  # the warm-up step is over
            else:
                clips += len(labels)
            if done == steps + 1:
                break
    seconds = time.perf_counter() - started
    return {"steps": steps, "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def reference_evaluate(dataset: ReferenceDataset, device) -> dict:
    """The notebook's validation loop over `dataset` (eval mode, no_grad, batch 4). Returns clips/s."""
    import time

    import torch

    model = reference_model().to(device).eval()
    started = time.perf_counter()
    probs = []
    with torch.no_grad():
        for imgs, lmks, _ in reference_loader(dataset, shuffle=False):
            probs.append(reference_forward(model, imgs.to(device), lmks.to(device)).cpu())
    seconds = time.perf_counter() - started
    return {"clips": len(dataset), "seconds": seconds, "clips_per_s": len(dataset) / seconds}
