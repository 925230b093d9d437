"""The import rule of README's "Code map", checked on the source.

Layers, lowest first; a module may import its own layer and those below:

    mosis_format → app.platform → app.edge → app.catalog → app.housekeeping
    → app.services → app.api → the entry points (app, app.web, app.cli,
    app.scheduler, app.native, app.gunicorn_conf)

Beside them, the developers' command-line client `mosis_cli` (cli/, a
distribution of its own) imports only itself and `mosis_format`, besides the
standard library and requests; nothing imports it.

Imports under `if TYPE_CHECKING:` are annotations only and not counted.
Every import is at the top of its module, except the few listed in
`LOCAL_IMPORTS` with the reason each exists.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ["mosis_format", "app.platform", "app.edge", "app.catalog", "app.housekeeping",
          "app.services", "app.api", "app"]

# module: (imported module, why it is not at the top)
LOCAL_IMPORTS = {
    ("app", "app.web"): "importing any app.* module must not load Flask and the API: "
                        "the scheduler drops PROMETHEUS_MULTIPROC_DIR before prometheus_client loads",
}


# The folder each top-level package lives in.
PACKAGES = {"app": ROOT, "mosis_format": ROOT / "format", "mosis_cli": ROOT / "cli"}
# What the client may import besides the standard library.
CLIENT_IMPORTS = {"mosis_cli", "mosis_format", "requests"}


def _modules() -> dict[str, Path]:
    found = {}
    for top, base in PACKAGES.items():
        for path in (base / top).rglob("*.py"):
            name = ".".join(path.relative_to(base).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at the top) for each import in `name`."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = _type_checking_nodes(tree)
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module if node.level == 0 else _relative(name, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        found += [(t, node.lineno, id(node) in top) for t in targets if t in MODULES]
    return found


def _relative(name: str, node: ast.ImportFrom) -> str:
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def layer_of(name: str) -> int:
    """The index in LAYERS of the longest layer name `name` is in (the
    client, outside the layers, counts as the top)."""
    if name.split(".")[0] == "mosis_cli":
        return len(LAYERS) - 1
    inside = [layer for layer in LAYERS if name == layer or name.startswith(layer + ".")]
    return LAYERS.index(max(inside, key=len))


def test_every_module_is_in_its_layer():
    assert layer_of("app.catalog.packages") == LAYERS.index("app.catalog")
    assert layer_of("app.services") == LAYERS.index("app.services")
    assert layer_of("app.scheduler") == LAYERS.index("app")
    assert layer_of("mosis_format.delta.spec") == 0
    assert len([n for n in MODULES if n.startswith("app.")]) > 30
    assert {"mosis_cli", "mosis_cli.commands", "mosis_cli.http"} <= set(MODULES)


def top_level_imports(path: Path) -> set[str]:
    """The top-level names of every module `path` imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def client_problems(modules: dict[str, Path]) -> list[str]:
    """The client imports only itself, mosis_format, requests and the
    standard library; no other module imports the client."""
    problems = []
    for name, path in modules.items():
        imported = top_level_imports(path) - {"__future__"}
        if name.split(".")[0] == "mosis_cli":
            problems += [f"{name} imports {m}" for m in sorted(imported)
                         if m not in CLIENT_IMPORTS and m not in sys.stdlib_module_names]
        elif "mosis_cli" in imported:
            problems.append(f"{name} imports mosis_cli: the client is not part of the server")
    return problems


def test_the_client_imports_only_itself_and_the_formats():
    assert client_problems(MODULES) == []


def test_the_client_rule_notices_a_server_import(tmp_path):
    (tmp_path / "bad.py").write_text("import flask\nfrom app.platform import config\nimport json\n")
    (tmp_path / "server.py").write_text("from mosis_cli.http import Api\n")
    assert client_problems({"mosis_cli.bad": tmp_path / "bad.py", "app.server": tmp_path / "server.py"}) == [
        "mosis_cli.bad imports app", "mosis_cli.bad imports flask",
        "app.server imports mosis_cli: the client is not part of the server"]


def test_no_module_imports_a_layer_above_its_own():
    wrong = [f"{name}:{line} imports {target}"
             for name in MODULES for target, line, _ in imports_of(name)
             if layer_of(target) > layer_of(name) and not target.startswith(name + ".")]
    assert not wrong, "\n".join(wrong)


def test_imports_are_at_the_top_of_their_module():
    local = [f"{name}:{line} imports {target} inside a function"
             for name in MODULES for target, line, at_top in imports_of(name)
             if not at_top and (name, target) not in LOCAL_IMPORTS]
    assert not local, "\n".join(local)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    # A package's __init__ importing its own modules is how packages work, not a cycle.
    graph = {name: {t for t, _, _ in imports_of(name) if not (MODULES[name].name == "__init__.py"
                                                                and t.startswith(name + "."))}
             for name in MODULES}
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_pure_core_imports_nothing_of_the_server():
    for name in (n for n in MODULES if n.startswith("mosis_format")):
        text = MODULES[name].read_text()
        for banned in ("flask", "peewee", "minio", "app.", "psycopg2", "apscheduler", "PIL"):
            assert f"import {banned}" not in text and f"from {banned}" not in text, (name, banned)
