"""Splitting without identity leakage: who is in each video, the groups that must stay on one
side of a split, split files, and --pairs' groups."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from deepfake_cli.data.samples import Sample
from deepfake_cli.errors import DeepfakeError

PAIR_GROUP_MOST = 32  # videos in one --pairs group at most (pair_groups)

DFD_REAL = re.compile(r"(\d+)__\w+")  # DeepFakeDetection's actors: `01__kitchen_pan` is actor 01
DFD_FAKE = re.compile(r"(\d+)_(\d+)__(\w+)__[A-Za-z0-9]+")  # `01_02__kitchen_pan__YVGY8LOK`: 02's face on 01's video


def identity_tokens(video: str) -> frozenset[str]:
    """The people in a video, from its id.

    FaceForensics++: `033` is person 033; the fake `033_097` shows 033 and 097.
    DeepFakeDetection: `01__kitchen_pan` is actor 01; `01_02__kitchen_pan__YVGY8LOK` shows actors 01 and 02.
    Celeb-DF: `id0_0003` is person id0; `id0_id16_0003` shows id0 and id16.
    Anything else: the video is its own identity.
    """
    if fake := DFD_FAKE.fullmatch(video):
        return frozenset({f"actor{fake[1]}", f"actor{fake[2]}"})
    if real := DFD_REAL.fullmatch(video):
        return frozenset({f"actor{real[1]}"})
    parts = video.split("_")
    if all(p.isdigit() for p in parts):
        return frozenset(parts)
    people = [p for p in parts if re.fullmatch(r"id\d+", p)]
    return frozenset(people) if people else frozenset([video])


def made_on(video: str) -> str:
    """The real video a fake was made on, from its id (a real video's is its own).

    FaceForensics++: `033_097` is 097's face on 033's video `033`. DeepFakeDetection:
    `01_02__kitchen_pan__YVGY8LOK` is made on `01__kitchen_pan`. Celeb-DF: `id0_id16_0003` is
    id16's face on `id0_0003`. Anything else (a SelfBlend `033`): the video of the same id.
    """
    if fake := DFD_FAKE.fullmatch(video):
        return f"{fake[1]}__{fake[3]}"
    parts = video.split("_")
    if len(parts) > 1 and all(p.isdigit() for p in parts):
        return parts[0]
    if len(parts) == 3 and re.fullmatch(r"id\d+", parts[0]) and re.fullmatch(r"id\d+", parts[1]):
        return f"{parts[0]}_{parts[2]}"
    return video


def identity_groups(samples: list[Sample]) -> list[list[Sample]]:
    """Videos grouped so that those sharing a person are together (union-find over identities)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def people(s: Sample) -> frozenset[str]:  # with the people of the real video it was made on, where recorded
        return identity_tokens(s.video) | (identity_tokens(s.made_on_video) if s.made_on else frozenset())

    for s in samples:
        first, *rest = sorted(people(s))
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(find(min(people(s))), []).append(s)
    return [groups[g] for g in sorted(groups)]


def identity_split(samples: list[Sample], val_fraction: float, seed: int) -> dict[str, list[Sample]]:
    """Split so that videos sharing a person land on the same side."""
    order = identity_groups(samples)
    random.Random(seed).shuffle(order)
    val, target = [], val_fraction * len(samples)
    for group in order:
        if len(val) >= target:
            break
        val += group
    val_keys = {s.key for s in val}
    return {"train": [s for s in samples if s.key not in val_keys], "val": sorted(val)}


def pair_groups(samples: list[Sample], most: int = PAIR_GROUP_MOST) -> list[list[int]]:
    """Indices of `samples` in the groups --pairs batches together and augments alike.

    A group is the people a fake shows with all their videos (`identity_groups`): FaceForensics++'s
    `000_003` with `003_000`, `000` and `003`, so a swap sits beside the real video it was made on
    and the real video of the face it carries. Where swaps chain many people into one group (as in
    Celeb-DF), a group of more than `most` videos is cut into each real video with the fakes made
    on it (`made_on`).
    """
    index = {s.key: i for i, s in enumerate(samples)}
    groups = []
    for group in identity_groups(samples):
        if len(group) <= most:
            groups.append([index[s.key] for s in group])
            continue
        by_video: dict[str, list[int]] = {}
        for s in group:
            by_video.setdefault(s.made_on_video or made_on(s.video), []).append(index[s.key])
        groups += by_video.values()
    return groups


SPLIT_PARTS = ("train", "val", "test")


def read_split_file(path: Path, samples: list[Sample], flag: str = "--split-file") -> dict[str, list[Sample]]:
    """A JSON object {"train": [...], "val": [...], "test": [...]} ("test" optional), or a Celeb-DF test
    list (`read_test_list`), which gives "test" alone.

    Entries are video ids (`033`, `033_097`), folder-qualified keys (`Deepfakes/033_097`), or
    FaceForensics++ pairs (`["033", "097"]`: the real videos and both fakes of the pair).
    Any other key, or a part that is not such a list, is refused: a typo must not quietly
    leave a part out.
    """
    if path.suffix == ".txt":
        return {"test": read_test_list(path, samples, flag)}
    shape = "a JSON object with 'train' and 'val' (and optionally 'test') lists of video ids"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DeepfakeError(f"{flag} {path}: not a readable JSON file; expected {shape}") from None
    if not isinstance(spec, dict) or not {"train", "val"} <= set(spec):
        raise DeepfakeError(f"{flag} {path}: expected {shape}")
    unknown = sorted(set(spec) - set(SPLIT_PARTS))
    if unknown:
        raise DeepfakeError(f"{flag} {path}: unknown key {', '.join(map(repr, unknown))}; the keys are train, val and test")
    split: dict[str, list[Sample]] = {}
    for name, entries in spec.items():
        if not isinstance(entries, list) or not all(_split_entry(e) for e in entries):
            raise DeepfakeError(f"{flag} {path}: '{name}' must be a list of video ids (\"033\"), keys "
                                "(\"Deepfakes/033_097\") or pairs ([\"033\", \"097\"])")
        wanted = set()
        for e in entries:
            if isinstance(e, list):
                wanted |= {*e, "_".join(e), "_".join(reversed(e))}
            else:
                wanted.add(e)
        split[name] = [s for s in samples if s.video in wanted or s.key in wanted]
    return split


def read_test_list(path: Path, samples: list[Sample], flag: str) -> list[Sample]:
    """Celeb-DF's List_of_testing_videos.txt: lines `<1 real | 0 fake> <folder>/<video>.mp4`."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        raise DeepfakeError(f"{flag} {path}: unreadable; expected Celeb-DF's List_of_testing_videos.txt") from None
    keys = {str(Path(line[1]).with_suffix("")) for line in lines if len(line) == 2 and line[0] in ("0", "1")}
    if not keys or len(keys) < len(lines):
        raise DeepfakeError(f"{flag} {path}: expected lines '<1|0> <folder>/<video>.mp4', as Celeb-DF's "
                            "List_of_testing_videos.txt has them")
    return [s for s in samples if s.key in keys]


def _split_entry(entry) -> bool:
    return isinstance(entry, str) or (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry))


def describe_split(split: dict[str, list[Sample]]) -> dict[str, dict[str, int]]:
    return {name: {"real": sum(s.label == 0 for s in part), "fake": sum(s.label == 1 for s in part)}
            for name, part in split.items()}


def method_counts(samples: list[Sample]) -> Counter:
    return Counter(s.folder for s in samples)
