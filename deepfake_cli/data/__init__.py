"""Reading extracted data (ours or the reference preprocessing's) for training and evaluation.

- samples.py: the videos of an `extract` OUT folder, their files checked, their crop and sampling,
  a video's crops and landmark vectors;
- split.py: who is in each video, splits without identity leakage, split files, --pairs' groups;
- augment.py: one augmentation draw per sequence;
- sequences.py: the datasets (a video's sequence, its self-blend, or both);
- samplers.py: --pairs' and --self-blend's batch order, and the one DataLoader.

The last two need torch and are imported on first use, so that reading data does not: `evaluate`
with an exported .onnx model runs where torch is not installed.
"""

import importlib

from deepfake_cli.data.augment import augment
from deepfake_cli.data.samples import (Sample, check_samples, data_crop, data_sampling, load_frames, load_vectors,
                                       scan)
from deepfake_cli.data.split import (SPLIT_PARTS, describe_split, identity_groups, identity_split, identity_tokens,
                                     made_on, method_counts, pair_groups, read_split_file, read_test_list)

_WITH_TORCH = {"GroupedSampler": "samplers", "PairedSampler": "samplers", "loader": "samplers",
               "BLEND_FOLDER": "sequences", "MixedDataset": "sequences", "SelfBlendDataset": "sequences",
               "SequenceDataset": "sequences"}

__all__ = ["BLEND_FOLDER", "GroupedSampler", "MixedDataset", "PairedSampler", "SPLIT_PARTS", "Sample",
           "SelfBlendDataset", "SequenceDataset", "augment", "check_samples", "data_crop", "data_sampling",
           "describe_split", "identity_groups", "identity_split", "identity_tokens", "load_frames", "load_vectors",
           "loader", "made_on", "method_counts", "pair_groups", "read_split_file", "read_test_list", "scan"]


def __getattr__(name: str):
    if name in _WITH_TORCH:
        return getattr(importlib.import_module(f"deepfake_cli.data.{_WITH_TORCH[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
