"""A ``torch.save``'d state_dict read as numpy arrays, without importing torch.

torch's import is about half of the daemon's start-up on the CPU (2 of ~3.6 s on the
project's machine) and a third of its memory, yet a served LSTM needs only its weights. A
state_dict written by ``torch.save`` is a zip archive: ``data.pkl``, a pickle whose tensors
are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls over
persistent storages, and ``data/<key>``, each storage's raw bytes. This reader unpickles
``data.pkl`` with only those names allowed (as ``torch.load(weights_only=True)`` does: a
pickle that names anything else is refused, nothing in it runs) and rebuilds each tensor
as a numpy array over its storage's bytes.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# torch's storage classes → numpy dtypes (bfloat16 and the complex types have no plain
# numpy match here: a file holding them is refused, and torch reads it instead)
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class StateError(ValueError):
    """The file is not a state_dict this reader can rebuild (one line: what is wrong)."""


class _Storage:
    """A storage class named by the pickle: which dtype its bytes hold."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for numpy: the view of ``storage`` that the tensor
    was, copied (so that it owns its memory, contiguous)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in size + stride) or offset < 0:
        raise StateError("a tensor with a negative size, stride or offset")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.size:
        raise StateError(f"a tensor reaches element {last} of a storage of {storage.size}")
    if not all(size):
        return np.zeros(size, dtype=storage.dtype)
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
    return np.array(view, order="C", copy=True)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        if module == "collections" and name == "OrderedDict":
            from collections import OrderedDict

            return OrderedDict
        raise StateError(f"the pickle names {module}.{name}, which a state_dict does not hold")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise StateError(f"an unknown persistent record {str(pid)[:60]!r}")
        _, kind, key, _, numel = pid
        key = str(key)
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}/data/{key}")
            except KeyError:
                raise StateError(f"storage {key} is missing from the archive") from None
            arr = np.frombuffer(raw, dtype=kind.dtype.newbyteorder("<"))
            if arr.size < int(numel):
                raise StateError(f"storage {key} holds {arr.size} elements, not {numel}")
            self.storages[key] = arr.astype(kind.dtype, copy=False)
        return self.storages[key]


def read_state(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``'d state_dict at ``path`` as numpy arrays, by name;
    raises `StateError` (or OSError) with one line when the file is not one."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise StateError("not a torch zip archive") from None
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise StateError("no data.pkl in the archive")
        prefix = pkl[0][: -len("/data.pkl")]
        if f"{prefix}/byteorder" in names and archive.read(f"{prefix}/byteorder").strip() not in (b"little",):
            raise StateError("tensors stored big-endian")
        try:
            state = _Unpickler(archive.read(pkl[0]), archive, prefix).load()
        except StateError:
            raise
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise StateError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                              for k, v in state.items()):
        raise StateError("the pickle is not a mapping of names to tensors")
    return dict(state)


__all__ = ["StateError", "read_state"]
