"""Reading extracted data (ours or the reference preprocessing's) for training and evaluation.

- samples.py: the videos of an `extract` OUT folder, their files checked, their crop and sampling;
- split.py: who is in each video, splits without identity leakage, split files, --pairs' groups;
- augment.py: one augmentation draw per sequence;
- sequences.py: the datasets (a video's sequence, its self-blend, or both);
- samplers.py: --pairs' and --self-blend's batch order, and the one DataLoader.
"""

from deepfake_cli.data.augment import augment
from deepfake_cli.data.samplers import GroupedSampler, PairedSampler, loader
from deepfake_cli.data.samples import Sample, check_samples, data_crop, data_sampling, load_vectors, scan
from deepfake_cli.data.sequences import BLEND_FOLDER, MixedDataset, SelfBlendDataset, SequenceDataset
from deepfake_cli.data.split import (SPLIT_PARTS, describe_split, identity_groups, identity_split, identity_tokens,
                                     made_on, method_counts, pair_groups, read_split_file, read_test_list)

__all__ = ["BLEND_FOLDER", "GroupedSampler", "MixedDataset", "PairedSampler", "SPLIT_PARTS", "Sample",
           "SelfBlendDataset", "SequenceDataset", "augment", "check_samples", "data_crop", "data_sampling",
           "describe_split", "identity_groups", "identity_split", "identity_tokens", "load_vectors", "loader",
           "made_on", "method_counts", "pair_groups", "read_split_file", "read_test_list", "scan"]
