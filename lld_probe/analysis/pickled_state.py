"""The attributes of a pickled object, read without running any code from the file.

TRL saves its GRPOConfig as training_args.bin (torch.save: a zip with a pickle inside). Unpickling it the
ordinary way imports and calls whatever the file names, so opening someone else's run folder could run code
from it. Here every class or function the pickle names is replaced by an inert stand-in that only records
the state it is given: the result is plain data (numbers, strings, lists, dicts, stand-ins)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

# the only globals resolved for real: containers the pickle protocol itself rebuilds
_SAFE = {("builtins", name) for name in ("list", "dict", "set", "frozenset", "tuple", "int", "float", "str",
                                           "bytes", "bool", "complex", "slice", "range")}


class Inert:
    """Stands in for any class or function a pickle names: records what it was called with and its state."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __call__(self, *args, **kwargs):          # a stand-in "function" returns a fresh stand-in
        return Inert(*args)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:       # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __reduce__(self):                          # never re-pickled by us
        raise TypeError("an inert stand-in cannot be pickled")


def _stand_in(module: str, name: str):
    return type(name, (Inert,), {"__module__": f"inert:{module}"})


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE:
            return super().find_class(module, name)
        return _stand_in(module, name)

    def persistent_load(self, pid):               # tensors saved by torch.save: not needed, never loaded
        return None


def read_pickled_attributes(file) -> dict:
    """The attribute dict of the object pickled in `file` (a torch.save zip or a plain pickle), no code run."""
    data = Path(file).read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                raise ValueError(f"{file}: a zip without data.pkl (not a torch.save file)")
            data = archive.read(names[0])
    try:
        value = _InertUnpickler(io.BytesIO(data)).load()
    except Exception as error:
        raise ValueError(f"{file}: not a readable pickle ({error})") from error
    return dict(vars(value)) if isinstance(value, Inert) else (value if isinstance(value, dict) else {})
