"""Regenerate targets/README.md's generated blocks and targets/schema.json from the schema.

Run from anywhere: ``python scripts/gen_target_docs.py`` (``--check`` exits 1 when a file is
out of date instead of writing it). tests/test_target.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acompile.target import render_readme  # noqa: E402 - needs the path above
from acompile.target_schema import json_schema_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    readme = ROOT / "targets" / "README.md"
    outputs = {readme: render_readme(readme.read_text(encoding="utf-8")),
               ROOT / "targets" / "schema.json": json_schema_text()}
    stale = [path for path, text in outputs.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    for path in stale:
        if args.check:
            print(f"{path.relative_to(ROOT)} is out of date; run python scripts/gen_target_docs.py")
        else:
            path.write_text(outputs[path], encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
