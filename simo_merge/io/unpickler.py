"""The one restricted unpickler every ``allow_pickle=True`` load goes through.

Pickled whole modules (task_vectors' ``ImageEncoder``, ``torch.save(model)``) name classes and functions
that plain unpickling would import and call. Here a global resolves to a real object only when its exact
``(module, name)`` pair is on :data:`ALLOWED`: torch's tensor rebuild functions, dtypes,
``collections.OrderedDict`` and inert builtins (wrapped so that no call builds more than the pickle
itself holds: ``bytes(2**31)`` is refused). Dotted names (protocol 4's ``'os.system'`` reached
through an allowed module) are refused outright. Every other global, torch.nn module classes included,
becomes a :class:`StandIn` subclass that only records what it was given, so no foreign constructor or
function ever runs and no source tree of the pickling project is needed. BUILD (``__setstate__``) is
accepted only on those stand-ins: a pickle may not set attributes of anything else, such as an allowed
torch function's ``__defaults__``, which would change every later load in the process.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class StandIn:
    """Placeholder for a pickled object whose class is not resolved; it only records what it was given.

    ``pickled_class`` is ``"module.Name"``; constructor arguments go to ``pickled_args``; the pickled state
    (usually the instance ``__dict__``) to ``pickled_state`` and, when it is a dict, into ``__dict__`` so
    module trees (``_parameters``/``_buffers``/``_modules``) can be walked like real modules.
    """

    pickled_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = object.__new__(cls)
        obj.__dict__["pickled_args"] = args
        obj.__dict__["pickled_state"] = None
        obj.__dict__["pickled_items"] = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["pickled_state"] = state
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)

    # list/dict subclasses are rebuilt by APPEND(S)/SETITEMS on the new object
    def append(self, item: Any) -> None:
        self.pickled_items.append(item)

    def extend(self, items: Any) -> None:
        self.pickled_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pickled_items.append((key, value))

    def __repr__(self) -> str:
        return f"<StandIn {self.pickled_class}>"


_standins: dict[tuple[str, str], type] = {}


def standin_class(module: str, name: str) -> type:
    """The (cached) :class:`StandIn` subclass for the global ``module.name``."""
    key = (module, name)
    if key not in _standins:
        _standins[key] = type(name, (StandIn,), {"pickled_class": f"{module}.{name}", "__module__": __name__})
    return _standins[key]


class _StorageTag:
    """What a storage class name resolves to: torch's loader only reads ``.dtype`` from it."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, limited to latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only rebuilds latin-1 bytes, got {encoding!r}")
    return text.encode("latin1")


_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def _bounded(kind: type) -> Any:
    """``kind(*args)`` for arguments the pickle already holds, so the result is no larger than they are:
    scalar types take scalars only (``str(nested list)`` could grow exponentially), ``bytes`` takes no
    size (``bytes(2**31)`` would allocate it), keyword arguments are refused."""

    def build(*args: Any, **kwargs: Any) -> Any:
        scalar = kind in _SCALARS or kind is slice
        for arg in (*args, *kwargs.values()):  # no repr of the arguments: it could be huge
            if (
                kwargs
                or (scalar and not isinstance(arg, _SCALARS))
                or (kind is bytes and isinstance(arg, int))
            ):
                kinds = ", ".join(type(a).__name__ for a in args)
                raise pickle.UnpicklingError(
                    f"refused builtins.{kind.__name__}({kinds}): not a copy of pickled data"
                )
        return kind(*args)

    build.__name__ = build.__qualname__ = kind.__name__
    return build


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): OrderedDict}
    for kind in (set, frozenset, list, dict, tuple, int, float, bool, str, bytes, complex, slice):
        allowed[("builtins", kind.__name__)] = _bounded(kind)
    allowed[("_codecs", "encode")] = _latin1_encode
    rebuild = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
    for name in rebuild:
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch", "device")] = torch.device
    with warnings.catch_warnings():  # reading a legacy storage class's dtype warns
        warnings.simplefilter("ignore")
        values = {name: getattr(torch, name, None) for name in dir(torch)}
        dtypes = {n: v.dtype for n, v in values.items() if n.endswith("Storage") and hasattr(v, "dtype")}
    for name, value in values.items():
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[("torch", name)] = value
        elif isinstance(dtypes.get(name), torch.dtype):
            allowed[("torch", name)] = _StorageTag(dtypes[name])
    allowed[("torch", "UntypedStorage")] = _StorageTag(torch.uint8)
    return allowed


#: the only (module, name) globals that resolve to real objects
ALLOWED: dict[tuple[str, str], Any] = _allowed()
#: protocol <= 2 pickles name Python 2 modules
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle._Unpickler):
    """Resolves only :data:`ALLOWED` pairs; refuses dotted names; everything else is a :class:`StandIn`;
    BUILD only on :class:`StandIn` instances (the pure-Python unpickler, whose opcodes can be overridden)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        target = self.stack[-2] if len(self.stack) > 1 else None
        if not isinstance(target, StandIn):
            raise pickle.UnpicklingError(
                f"refused BUILD (set state) on a {type(target).__name__}: only pickled objects' stand-ins "
                "take state"
            )
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise pickle.UnpicklingError(f"global name must be strings, got {module!r}, {name!r}")
        if "." in name or not name.isidentifier():
            raise pickle.UnpicklingError(f"refused global {module!r}, {name!r}: dotted or odd name")
        module = _PY2_MODULES.get(module, module)
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        return standin_class(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: a pickle-module look-alike for ``torch.load(pickle_module=...)``
restricted_pickle = types.ModuleType("simo_merge_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


class UnsafePickleError(RuntimeError):
    """A pickled file could not be read with the restricted unpickler (names the file and why)."""


def refuse_torchscript(path: Path) -> None:
    """Raise :class:`UnsafePickleError` if ``path`` is a TorchScript archive (it holds code), or a zip file
    that cannot be read, before ``torch.load`` would hand it to ``torch.jit.load``."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise UnsafePickleError(f"{path}: not a readable torch zip archive ({err})") from err
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise UnsafePickleError(f"{path}: a TorchScript archive (holds code); not loaded")


def restricted_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` of ``path`` with :class:`RestrictedUnpickler`; TorchScript archives are refused, and
    so are legacy tar files (torch < 0.4): torch extracts their members to disk, where a FIFO member
    hangs the load and a symlink member is followed out of the archive.

    Raises :class:`UnsafePickleError` naming the file for anything unreadable or refused.
    """
    path = Path(path)
    if not path.is_file():
        raise UnsafePickleError(f"{path}: not a regular file")
    refuse_torchscript(path)
    if not zipfile.is_zipfile(path) and tarfile.is_tarfile(path):
        raise UnsafePickleError(
            f"{path}: a legacy tar-format torch file (torch < 0.4); not loaded: re-save it with torch.save"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise UnsafePickleError(f"{path}: refused or unreadable pickle ({reason})") from err


def module_tree_state(obj: Any) -> dict[str, Tensor]:
    """``state_dict()``-like tensors of a module tree made of real modules and/or :class:`StandIn`s.

    Walks ``_parameters``, persistent ``_buffers`` and ``_modules`` of each object's ``__dict__``.
    """
    out: dict[str, Tensor] = {}

    def walk(node: Any, prefix: str, stack: tuple[int, ...]) -> None:
        attrs = getattr(node, "__dict__", None)
        if not isinstance(attrs, dict) or id(node) in stack:
            return
        params = attrs.get("_parameters") or {}
        for key, value in params.items() if isinstance(params, Mapping) else ():
            if isinstance(value, Tensor):
                out[prefix + key] = value.detach()
        skip = attrs.get("_non_persistent_buffers_set") or set()
        buffers = attrs.get("_buffers") or {}
        for key, value in buffers.items() if isinstance(buffers, Mapping) else ():
            if isinstance(value, Tensor) and key not in skip:
                out[prefix + key] = value.detach()
        modules = attrs.get("_modules") or {}
        for key, child in modules.items() if isinstance(modules, Mapping) else ():
            if child is not None:
                walk(child, f"{prefix}{key}.", (*stack, id(node)))

    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    walk(obj, "", ())
    return out
