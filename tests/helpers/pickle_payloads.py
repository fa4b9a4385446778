"""Hand-written protocol-4 pickles (the opcodes an attacker would write) and torch archives holding them,
for the unpickler and hostile-input tests."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch


def text(s: str) -> bytes:
    """BINUNICODE pushing ``s``."""
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def value(v) -> bytes:
    """Opcodes pushing ``v`` (None, bool, int, str, bytes, tuple, dict of str -> value)."""
    if v is None:
        return pickle.NONE
    if isinstance(v, bool):
        return pickle.NEWTRUE if v else pickle.NEWFALSE
    if isinstance(v, int):
        return pickle.BININT + struct.pack("<i", v)
    if isinstance(v, str):
        return text(v)
    if isinstance(v, bytes):
        return pickle.BINBYTES + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        return pickle.MARK + b"".join(value(x) for x in v) + pickle.TUPLE
    if isinstance(v, dict):
        items = b"".join(value(k) + value(x) for k, x in v.items())
        return pickle.EMPTY_DICT + (pickle.MARK + items + pickle.SETITEMS if v else b"")
    raise TypeError(type(v))


def global_ref(module: str, name: str) -> bytes:
    """STACK_GLOBAL: protocol 4 lets ``name`` be dotted; stock unpickling walks it attribute by attribute."""
    return text(module) + text(name) + pickle.STACK_GLOBAL


def call(func: bytes, *args) -> bytes:
    """``func(*args)`` by REDUCE."""
    return func + value(tuple(args)) + pickle.REDUCE


def protocol4(body: bytes) -> bytes:
    """A whole pickle: the protocol header, ``body`` (leaving one object), STOP."""
    return pickle.PROTO + bytes([4]) + body + pickle.STOP


def torch_zip(payload: bytes, path: Path) -> Path:
    """A real torch zip archive at ``path`` whose ``data.pkl`` is ``payload``."""
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name in src.namelist():
            out.writestr(name, payload if name.endswith("data.pkl") else src.read(name))
    return path
