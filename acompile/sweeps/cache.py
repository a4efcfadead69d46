"""Resumable sweeps: each finished row kept in SWEEP_DIR/points/ under a content hash of what made it.

The key covers the model's bytes, the resolved target after the point's
overrides, the options, the data and the seed (and acompile's version), so a
rerun skips exactly the rows whose inputs did not change. A row is written
atomically as soon as it is done: an interruption loses only rows in flight.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .._version import __version__
from ..files import atomic_file


def row_key(model_sha: str, target_canonical: str, options: dict, data_sha: str, seed: int) -> str:
    text = json.dumps({"version": __version__, "model": model_sha, "target": target_canonical,
                       "options": options, "data": data_sha, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    """Rows by key, as small JSON files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "points"

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            row = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return row if isinstance(row, dict) and "status" in row else None

    def put(self, key: str, row: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path(key)) as tmp:
            Path(tmp).write_text(json.dumps(row, sort_keys=True), encoding="utf-8")
