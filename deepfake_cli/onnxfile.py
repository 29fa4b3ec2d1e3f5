"""What an exported `.onnx` file says about itself, read without onnx, onnxruntime or torch.

An ONNX model is a protobuf `ModelProto`; its `metadata_props` (field 14) are key/value string
pairs. Walking the top-level fields and seeking past the rest (the graph's weights are most of the
file) reads them in a millisecond, so `predict` knows the crop and sampling before the model loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

from deepfake_cli.errors import DeepfakeError

FORMAT = "deepfake-cli-onnx/2"  # what `deepfake export` writes: crops and windows apart (see export.py)
# Every format this release reads; /1 took whole windows of crops, (N, T, S, S, 3), and scores them so.
READS = ("deepfake-cli-onnx/1", FORMAT)
METADATA_KEY = "deepfake_cli"
METADATA_FIELD = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
EXPORT_HINT = "export one from a checkpoint with `deepfake export best.pt`"


def is_onnx(path: Path) -> bool:
    """Whether `path` names an exported model (by its suffix, as `deepfake export` writes it)."""
    return Path(path).suffix.lower() == ".onnx"


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata_props; DeepfakeError if it is not a readable ONNX model."""
    try:
        with open(path, "rb") as f:
            props = {}
            for field, value in _fields(f, path.stat().st_size):
                if field == METADATA_FIELD:
                    entry = dict(_fields_of(value))
                    props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
            return props
    except FileNotFoundError:
        raise DeepfakeError(f"{path}: no such model file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DeepfakeError(f"{path}: not an ONNX model ({e}); {EXPORT_HINT}") from None


def read_description(path: Path) -> dict:
    """The description `deepfake export` wrote; one-line errors for files that are not ours or are newer."""
    text = read_metadata(path).get(METADATA_KEY)
    if text is None:
        raise DeepfakeError(f"{path}: an ONNX model, but not one deepfake-cli exported (no {METADATA_KEY!r} "
                            f"metadata); {EXPORT_HINT}")
    try:
        description = json.loads(text)
    except ValueError:
        raise DeepfakeError(f"{path}: its {METADATA_KEY!r} metadata is not JSON; {EXPORT_HINT}") from None
    made = str(description.get("format", ""))
    if made not in READS:
        newer = made.startswith(FORMAT.rsplit("/", 1)[0] + "/")
        raise DeepfakeError(f"{path}: exported as {made or 'an unknown format'}, which this deepfake-cli does not read "
                            f"(it reads {', '.join(READS)}); " + ("upgrade deepfake-cli" if newer else EXPORT_HINT))
    return description


def _varint(read) -> int:
    value, shift = 0, 0
    while True:
        byte = read(1)
        if not byte:
            raise ValueError("truncated")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a malformed varint")


def _fields(f: BinaryIO, size: int):
    """(field number, bytes) of each top-level length-delimited field wanted; others are skipped."""
    while f.tell() < size:
        key = _varint(f.read)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _varint(f.read)
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 5:
            f.seek(4, 1)
        elif wire == 2:
            length = _varint(f.read)
            if f.tell() + length > size:
                raise ValueError("truncated")
            if field == METADATA_FIELD:
                yield field, f.read(length)
            else:
                f.seek(length, 1)
        else:
            raise ValueError(f"wire type {wire}")
        if field == 0:
            raise ValueError("field 0")


def _fields_of(data: bytes):
    """(field number, bytes) of a small message's length-delimited fields."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n:pos]

    while pos < len(data):
        key = _varint(read)
        if key & 7 != 2:
            raise ValueError("not a string entry")
        length = _varint(read)
        yield key >> 3, read(length)
