"""Row tables on disk: safetensors files written batch by batch and read a few rows at a time.

A feature cache too large for RAM is written here as one ordinary ``.safetensors`` file (any safetensors
reader loads it; ``safetensors.torch.load_file`` gives the same tensors) whose tensors are ``[rows, ...]``.
Writing streams batches into the file (the header is known from the first batch), so the whole table is
never in memory; reading takes rows with ``os.pread``, so only the rows asked for reach the process
(pages sit in the OS page cache, not in the process's memory, unlike an ``mmap`` whose touched pages
count towards its resident set).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from simo_merge.io.atomic import atomic_path
from simo_merge.runtime import on_rank_zero

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
FROM_CODE = {code: dtype for dtype, code in DTYPES.items()}


def write_rows(
    path: str | os.PathLike,
    num_rows: int,
    batches: Iterable[Mapping[str, Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``batches`` (dicts of ``[b, ...]`` tensors, ``num_rows`` rows in all) as one safetensors file,
    atomically, holding one batch in memory at a time."""
    path = Path(path)
    iterator = iter(batches)
    first = {k: v.detach().cpu().contiguous() for k, v in next(iterator).items()}
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name in sorted(first):
        value = first[name]
        if value.dtype not in DTYPES:
            raise TypeError(f"{path}: tensor {name!r} has dtype {value.dtype}, not one of {list(DTYPES)}")
        size = num_rows * value[0].numel() * value.element_size()
        shape = [num_rows, *value.shape[1:]]
        header[name] = {"dtype": DTYPES[value.dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    written = 0
    with atomic_path(path, on_rank_zero()) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
        for batch in itertools.chain([first], iterator):
            rows = next(iter(batch.values())).shape[0]
            if written + rows > num_rows:
                raise ValueError(f"{path}: more than the {num_rows} rows announced")
            for name in sorted(first):
                begin = 8 + len(raw) + header[name]["data_offsets"][0]
                value = batch[name].detach().cpu().contiguous()
                row_bytes = value[0].numel() * value.element_size()
                f.seek(begin + written * row_bytes)
                f.write(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            written += rows
        if written != num_rows:
            raise ValueError(f"{path}: {written} rows written, {num_rows} announced")
    return path


class DiskRows:
    """Read rows of every tensor of a safetensors file without loading the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        self.metadata = header.pop("__metadata__", {}) or {}
        self.start = 8 + length
        self.entries = header
        self.num_rows = {name: e["shape"][0] for name, e in header.items()}
        self.nbytes = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())

    def names(self) -> list[str]:
        return list(self.entries)

    def rows(self, positions: Tensor) -> dict[str, Tensor]:
        """``{name: tensor[positions]}``, reading only those rows."""
        out = {}
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for name, entry in self.entries.items():
                dtype, shape = FROM_CODE[entry["dtype"]], entry["shape"]
                row_bytes = (entry["data_offsets"][1] - entry["data_offsets"][0]) // max(1, shape[0])
                begin = self.start + entry["data_offsets"][0]
                buf = b"".join(os.pread(fd, row_bytes, begin + int(p) * row_bytes) for p in positions)
                flat = (
                    torch.frombuffer(bytearray(buf), dtype=torch.uint8)
                    if buf
                    else torch.empty(0, dtype=torch.uint8)
                )
                out[name] = flat.view(dtype).reshape(len(positions), *shape[1:])
        finally:
            os.close(fd)
        return out
