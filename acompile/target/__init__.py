"""Target files: one accelerator described in TOML (targets/README.md), loaded into a typed Target.

``load_target(name_or_path)`` resolves ``extends``, fills defaults and checks
every field against the one field table (:mod:`.schema`); ``validate_file``
lists every problem instead of raising. ``target.crossbar.rows`` reads a field
typed as the schema declares it; ``target["crossbar.rows"]`` reads it by path.
"""

from .json_schema import json_schema, json_schema_text
from .model import Target, load_target, section_class, validate_file
from .overrides import apply_overrides, parse_settings
from .problems import Problem
from .read import MAX_FILE_BYTES, shipped_dir, shipped_targets
from .schema import FIELDS, SCHEMA_VERSION, TABLES, Field
from .toml_write import dumps_toml

__all__ = [
    "FIELDS", "MAX_FILE_BYTES", "SCHEMA_VERSION", "TABLES", "Field", "Problem", "Target", "dumps_toml",
    "json_schema", "json_schema_text", "load_target", "section_class", "shipped_dir", "shipped_targets",
    "validate_file", "apply_overrides", "parse_settings",
]
