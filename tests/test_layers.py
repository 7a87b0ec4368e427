"""The package's layers, as the architecture page draws them: imports only go down, and no
module imports itself back through others (no circle), counting imports under TYPE_CHECKING and
inside functions too."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scicat_ingestor"
ARCHITECTURE = ROOT / "docs" / "development" / "architecture.md"

# top first; packages on one line must not import each other
LAYERS = [
    ["__main__"],
    ["commands", "testing"],
    ["daemon"],
    ["sources", "ingest"],
    ["scicat", "schema"],
    ["ops"],
    ["config"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, package: str, modules: set[str]) -> Iterator[str]:
    """The project modules ``source`` (a module of ``package``) imports: ``from a import b`` is
    ``a.b`` when that is a module, else ``a``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in modules:
                    yield name
                elif base in modules:
                    yield base


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "data" not in p.parts}
    edges = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges[name] = set(imported(path.read_text(), package, set(files))) - {name}
    return edges


def layer_of(module: str) -> int | None:
    """The layer of a module's top-level package (None: the package's own ``__init__``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    pytest.fail(f"{module}: its package {parts[1]!r} is in no layer of LAYERS")


def test_every_import_goes_down_a_layer() -> None:
    upward = []
    for module, targets in graph().items():
        for target in targets:
            here, there = layer_of(module), layer_of(target)
            same_package = module.split(".")[:2] == target.split(".")[:2]
            if here is None or there is None or same_package:
                continue
            if there <= here:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back() -> None:
    edges = graph()
    circles: set[tuple[str, ...]] = set()

    def visit(module: str, path: list[str]) -> None:
        for target in edges[module]:
            if target in path:
                cycle = path[path.index(target) :]
                start = cycle.index(min(cycle))
                circles.add(tuple(cycle[start:] + cycle[:start]))
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in sorted(circles))


def test_the_package_top_level_stays_small() -> None:
    entries = [p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 12, sorted(entries)


def test_the_architecture_page_draws_these_layers() -> None:
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block, f"{ARCHITECTURE}: no ```-block after <!-- layers -->"
    # a line's packages are its leading ``name/`` words; the rest of the line describes them
    drawn = [
        re.findall(r"(\w+)/", re.match(r"(?:\w+/ +)*", line)[0])
        for line in block.group(1).splitlines()
    ]
    assert [names for names in drawn if names] == [n for n in LAYERS if n != ["__main__"]]


def test_the_checks_see_imports_of_every_form() -> None:
    """Absolute, relative, inside a function: all found, and ``daemon`` sits above ``ops``."""
    source = (
        "from scicat_ingestor.daemon.loop import Daemon\n"
        "from . import health\n"
        "from ..config import model\n"
        "def f() -> None:\n    import scicat_ingestor.sources.kafka\n"
    )
    modules = {
        "scicat_ingestor.daemon.loop",
        "scicat_ingestor.ops.health",
        "scicat_ingestor.config.model",
        "scicat_ingestor.sources.kafka",
    }
    assert set(imported(source, "scicat_ingestor.ops", modules)) == modules
    assert layer_of("scicat_ingestor.daemon.loop") == 2
    assert layer_of("scicat_ingestor.ops.health") == 5
