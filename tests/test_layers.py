"""The package's shape: the declared layer order, no import cycles, small modules.

Every module of ``acompile/`` belongs to a layer by its path (:data:`LAYERS`). A module
may import only from lower layers, or from its own layer (which is one package, or a
group of top-level modules of ``acompile``) as long as no cycle forms. Imports are read
from the source (AST), so function-local, relative and ``TYPE_CHECKING`` imports count
too; there is no list of exceptions.
"""

from __future__ import annotations

import ast
import re
import textwrap
import tomllib
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "acompile"
MAX_LINES = 420

# The declared order, lowest first. A name is a top-level module or a subpackage of acompile
# ("__init__" is the package's own module). docs/ARCHITECTURE.md draws the same table.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_version", "lazy", "requirements", "isolated", "onnx_walk"),
    ("limits", "files", "process_pool", "safe_read", "data_schema", "jsonio", "units", "ir", "onnx_core"),
    ("hardware",),
    ("numerics",),
    ("blocks", "mapping"),
    ("target",),
    ("onnx_exec",),
    ("frontend",),
    ("passes",),
    ("cost",),
    ("sim",),
    ("calibrate", "default_inputs"),
    ("compiler",),
    ("backends",),
    ("simulation",),
    ("check",),
    ("sweeps",),
    ("cli",),
    ("__init__", "__main__"),
]
LAYER_OF_UNIT = {unit: i for i, units in enumerate(LAYERS) for unit in units}


# ---------------------------------------------------------------------------
# reading the package
# ---------------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULE_FILES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit of ``acompile.x.y``: ``x`` (a top-level module or a subpackage); ``__init__`` for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int | None:
    return LAYER_OF_UNIT.get(unit_of(module))


def package_of(module: str) -> str:
    """The package a module lives in (a package's ``__init__`` lives in the package itself)."""
    return module if is_package(MODULE_FILES[module]) else module.rsplit(".", 1)[0]


def _resolve_relative(package: str, level: int, target: str | None) -> str:
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, imported acompile module) for every import statement anywhere in ``source``, a module of
    ``package``: top level, in functions, under ``if TYPE_CHECKING``; relative ones resolved. A name that is
    no module of acompile/ is returned as written (an import that would fail)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(package, node.level, node.module) if node.level else node.module
            for alias in node.names:
                # ``from pkg import name``: the submodule pkg.name if there is one, else pkg itself
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULE_FILES else base))
    return sorted((line, m) for line, m in found if m.split(".")[0] == "acompile")


def imports_of(module: str) -> list[tuple[int, str]]:
    return imports_in(MODULE_FILES[module].read_text(encoding="utf-8"), package_of(module))


def where(module: str, line: int) -> str:
    return f"{MODULE_FILES[module].relative_to(REPO)}:{line}"


def import_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(MODULE_FILES)
    for module in MODULE_FILES:
        for line, imported in imports_of(module):
            if imported != module and imported in MODULE_FILES:
                g.add_edge(module, imported, line=line)
    return g


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------

def test_the_import_reader_sees_every_kind_of_import():
    source = textwrap.dedent("""
        import numpy
        import acompile.ir, acompile.frontend.load as load
        from .. import errors
        from ..mapping import Mapping
        from . import base, nowhere
        from .base import CompileState
        if TYPE_CHECKING:
            from acompile.compiler import Options
        def later():
            from acompile import cli
            import acompile
    """)
    assert imports_in(source, "acompile.passes") == [
        (3, "acompile.frontend.load"), (3, "acompile.ir"), (4, "acompile.errors"), (5, "acompile.mapping"),
        (6, "acompile.passes"), (6, "acompile.passes.base"), (7, "acompile.passes.base"),
        (9, "acompile.compiler"), (11, "acompile.cli"), (12, "acompile")]
    assert layer_of("acompile.passes.base") == layer_of("acompile.passes") < layer_of("acompile.compiler")
    assert layer_of("acompile") == len(LAYERS) - 1 and layer_of("acompile.errors") == 0


def test_every_module_has_a_declared_layer():
    undeclared = [str(p.relative_to(REPO)) for m, p in MODULE_FILES.items() if layer_of(m) is None]
    assert not undeclared, f"modules outside the declared layer order (add them to LAYERS and ARCHITECTURE.md): " \
                           f"{undeclared}"


def test_every_declared_layer_exists():
    units = {unit_of(m) for m in MODULE_FILES}
    missing = [u for layer in LAYERS for u in layer if u not in units]
    assert not missing, f"declared layer units with no module in acompile/: {missing}"


def test_imports_follow_the_layer_order():
    violations = []
    for module in MODULE_FILES:
        own = layer_of(module)
        for line, imported in imports_of(module):
            if imported not in MODULE_FILES:
                violations.append(f"{where(module, line)} {imported} (no such module)")
                continue
            theirs = layer_of(imported)
            if own is None or theirs is None or imported == module:
                continue    # undeclared modules fail test_every_module_has_a_declared_layer
            if theirs > own:
                violations.append(f"{where(module, line)} {imported} (layer {theirs} {unit_of(imported)} "
                                  f"above layer {own} {unit_of(module)})")
            elif theirs == own and package_of(imported) != package_of(module) \
                    and not (package_of(module).startswith(package_of(imported) + ".")
                             or package_of(imported).startswith(package_of(module) + ".")):
                violations.append(f"{where(module, line)} {imported} (same layer {own}, another package)")
    assert not violations, "imports against the declared layer order:\n" + "\n".join(violations)


def test_no_import_cycles():
    g = import_graph()
    cycles = []
    for component in nx.strongly_connected_components(g):
        if len(component) > 1:
            cycle = nx.find_cycle(g.subgraph(component))
            cycles.append(" -> ".join(f"{where(a, g.edges[a, b]['line'])} {b}" for a, b in cycle))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_modules_are_small():
    big = {str(p.relative_to(REPO)): n for p in MODULE_FILES.values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_every_module_says_what_it_owns():
    bare = [str(p.relative_to(REPO)) for p in MODULE_FILES.values()
            if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not bare, f"modules without a docstring: {bare}"


def test_every_package_is_installed():
    """pyproject.toml names the packages (flat layout): every package of acompile/, and the shipped targets."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {m for m, p in MODULE_FILES.items() if is_package(p)}
    assert sorted(config["packages"]) == sorted(packages | {"acompile.shipped_targets"})
    assert (REPO / config["package-dir"]["acompile.shipped_targets"] / "__init__.py").is_file()


def test_architecture_draws_the_declared_layers():
    """docs/ARCHITECTURE.md's layer diagram is LAYERS, top to bottom."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("## Layers", 1)[1].split("```")[1]
    drawn = {}
    for line in block.splitlines():
        if m := re.match(r"\s*(\d+)  (\S+(?: \S+)*)", line):
            drawn[int(m[1])] = tuple(u.removesuffix(".py").removesuffix("/") for u in m[2].split())
    assert drawn == dict(enumerate(LAYERS))


def test_architecture_names_every_module():
    """One line per module (a subpackage's ``__init__`` is its line in the layer diagram)."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = lambda rel: f"`{rel}`" in text or (rel.name == "__init__.py" and f" {rel.parent}/ " in text)
    missing = [str(p.relative_to(PACKAGE)) for p in MODULE_FILES.values()
               if p.stat().st_size and not named(p.relative_to(PACKAGE))]
    assert not missing, f"docs/ARCHITECTURE.md has no line for {missing}"


@pytest.mark.parametrize("doc", ["README.md", "targets/README.md", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))])
def test_doc_links_stay_in_the_repository(doc):
    """Every relative link of the docs names a file of this repository."""
    path = REPO / doc
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:|#", target):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            bad.append(target)
    assert not bad, f"{doc}: links outside the repository or to nothing: {bad}"


# the mapping travels in the compile state and Compiled.mapping, never in the graph's metadata
MAPPING_IN_META = re.compile(r"""\.meta\s*(\[\s*|\.get\(\s*|\.setdefault\(\s*|\.pop\(\s*)["']mapping["']""")


@pytest.mark.parametrize("folder", ["acompile", "tests", "scripts", "benchmarks", "samples"])
def test_the_mapping_is_not_in_graph_meta(folder):
    hits = [f"{p.relative_to(REPO)}:{i}" for p in sorted((REPO / folder).rglob("*.py"))
            for i, text in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if MAPPING_IN_META.search(text)]
    assert not hits, f"the mapping kept in the graph's metadata at {hits}"
