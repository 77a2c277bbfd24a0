"""Atomic file writes: a temporary name in the same folder, then a rename, so a run killed at any
moment leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_parquet(frame, path) -> Path:
    """DataFrame -> Parquet (pyarrow), atomically."""
    return _atomic(path, lambda tmp: frame.to_parquet(tmp, engine="pyarrow", index=False))


def write_json(data, path) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, default=str)
    return _atomic(path, write)


def write_text(text: str, path) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    return _atomic(path, write)
