"""What a run records about where it came from: package versions, git revision, start time."""

from __future__ import annotations

import datetime
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("lld-probe", "torch", "transformers", "trl", "verl", "accelerate", "pandas", "pyarrow")


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    return {"versions": package_versions(), "git_revision": git_revision(),
            "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
