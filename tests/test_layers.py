"""The kit's import graph: no import cycle among its modules, no module importing a layer
above its own, and no ``try: import crossmodal... except ImportError`` around the kit's own
modules (a missing module of the kit is a bug to see, not a case to skip).

The graph is read from the sources (``ast``), so the test imports nothing: every ``import``
and ``from ... import`` of a ``crossmodal`` module counts, at the top of a module or inside a
function, except those under ``if TYPE_CHECKING:`` (annotations only, never executed).
``from crossmodal.x import y`` is an edge to ``crossmodal.x.y`` when that is a module, else
to ``crossmodal.x``; importing ``crossmodal.a.b`` also runs ``crossmodal/a/__init__.py``, but
that implicit edge is not counted (a package's ``__init__`` re-exporting its submodules is
the normal layout, not a cycle).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
PKG = LIB / "crossmodal"

#: The layers, bottom to top: a module may import its own layer and those below it. The
#: first matching prefix gives a module's layer; a module matching none is in "core".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("crossmodal",)),  # errors, paper_tables, data, tasks, models, training, ...
    ("methods", ("crossmodal.methods",)),
    # the settings of a run: profile defaults per method, the paper protocol per method
    ("settings", ("crossmodal.profiles", "crossmodal.protocol")),
    ("runner", ("crossmodal.runner", "crossmodal.reference", "crossmodal.sweep.plan")),
    ("notebook", ("crossmodal.notebook",)),
    ("studies", ("crossmodal.studies",)),
    # what runs notebooks and their grids: the CLI, `crossmodal reproduce`, `crossmodal sweep`
    ("drivers", ("crossmodal.cli", "crossmodal.reproduce", "crossmodal.sweep")),
)

#: Import cycles that exist today, by name: each is a strict xfail below, so the test that
#: names it fails (XPASS) the day the cycle is gone, and its entry must then be deleted. A
#: cycle found that is not inside one of these fails at once.
KNOWN_CYCLES: dict[str, frozenset[str]] = {}

#: Imports of a layer above that exist today (strict xfails, as the cycles).
KNOWN_UPWARD: dict[str, tuple[str, str]] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, rank = -1, 0
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module: str) -> list[tuple[str, int]]:
    """(imported kit module, line) of every import in ``tree`` outside TYPE_CHECKING blocks."""
    out: list[tuple[str, int]] = []
    package = module if MODULES.get(module, Path()).name == "__init__.py" else \
        module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names
                       if a.name.split(".")[0] == "crossmodal")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] == "crossmodal":
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in MODULES else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(m, line) for m, line in out if m in MODULES]


def import_graph() -> dict[str, list[tuple[str, int]]]:
    return {m: _imports(ast.parse(p.read_text()), m) for m, p in MODULES.items()}


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan), and modules
    importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or any(w == v for w, _ in graph[v]):
                out.append(frozenset(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in graph:
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_the_graph_is_read():
    """The parser sees the edges we know of (so an empty graph cannot pass the tests below)."""
    graph = import_graph()
    assert any(m == "crossmodal.runner" for m, _ in graph["crossmodal.notebook.grid"])
    assert any(m == "crossmodal.notebook" for m, _ in graph["crossmodal.studies.orca"])
    assert len(graph) > 40


def test_no_import_cycle_besides_the_known_ones():
    found = [c for c in cycles(import_graph())
             if not any(c <= known for known in KNOWN_CYCLES.values())]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for module, edges in import_graph().items():
        for target, line in edges:
            if layer_of(target) > layer_of(module) and (module, target) not in \
                    KNOWN_UPWARD.values():
                bad.append(f"{MODULES[module].relative_to(LIB)}:{line}: {module} "
                           f"({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    assert not bad, "imports of a layer above:\n" + "\n".join(bad)


def test_the_layers_are_in_order():
    """The layer names the README's "where is what" lists, bottom to top."""
    names = [name for name, _ in LAYERS]
    assert names.index("methods") < names.index("runner") < names.index("notebook") \
        < names.index("studies") < names.index("drivers")
    assert layer_of("crossmodal.errors") == 0
    assert layer_of("crossmodal.sweep.plan") < layer_of("crossmodal.notebook.grid") \
        < layer_of("crossmodal.sweep.grids")


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = [ast.unparse(t) for t in (handler.type.elts if isinstance(handler.type, ast.Tuple)
                                     else [handler.type])]
    return any(n.split(".")[-1] in ("ImportError", "ModuleNotFoundError", "Exception",
                                    "BaseException") for n in names)


#: Files with a try/except ImportError around a kit import today (strict xfails below).
KNOWN_TRY: dict[str, str] = {}


def guarded_kit_imports() -> list[str]:
    """``path:line`` of every try block that imports a kit module and catches ImportError."""
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Try) or not any(map(_catches_import_error,
                                                            node.handlers)):
                continue
            body = ast.Module(body=node.body, type_ignores=[])
            if _imports(body, module):
                bad.append(f"{path.relative_to(LIB)}:{node.lineno}")
    return bad


def test_no_try_except_import_error_around_the_kits_own_modules():
    bad = [b for b in guarded_kit_imports()
           if b.rpartition(":")[0] not in KNOWN_TRY.values()]
    assert not bad, ("try/except ImportError around an import of the kit's own modules "
                     "(import them plainly): " + ", ".join(bad))


@pytest.mark.xfail(strict=True, reason="a known try/except ImportError (KNOWN_TRY); XPASS: it is "
                                       "gone, delete its entry")
@pytest.mark.parametrize("name", list(KNOWN_TRY))
def test_known_guarded_import_is_gone(name):
    assert not [b for b in guarded_kit_imports() if b.rpartition(":")[0] == KNOWN_TRY[name]]


@pytest.mark.xfail(strict=True, reason="a known import cycle (KNOWN_CYCLES); XPASS: it is gone, "
                                       "delete its entry")
@pytest.mark.parametrize("name", list(KNOWN_CYCLES))
def test_known_cycle_is_gone(name):
    known = KNOWN_CYCLES[name]
    assert not [c for c in cycles(import_graph()) if len(c & known) > 1]


@pytest.mark.xfail(strict=True, reason="a known import of a layer above (KNOWN_UPWARD); XPASS: "
                                       "it is gone, delete its entry")
@pytest.mark.parametrize("name", list(KNOWN_UPWARD))
def test_known_upward_import_is_gone(name):
    module, target = KNOWN_UPWARD[name]
    assert target not in {t for t, _ in import_graph()[module]}


def test_only_paper_tables_reads_the_paper_csvs():
    """``paper_results/*.csv`` is read in one place, :mod:`crossmodal.paper_tables` (a path
    built from the folder's name elsewhere is a second reader)."""
    readers = sorted(m for m, p in MODULES.items()
                     if any(isinstance(n, ast.Constant) and n.value == "paper_results"
                            for n in ast.walk(ast.parse(p.read_text()))))
    assert readers == ["crossmodal.paper_tables"]


def test_studies_use_the_notebook_layers_public_names_only():
    """A study imports ``crossmodal.notebook`` (its re-exported public names), never a
    private name or a submodule of it, so the notebook layer can move code between its
    modules without breaking a study."""
    bad = []
    for module, path in MODULES.items():
        if not module.startswith("crossmodal.studies"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "crossmodal.notebook"):
                names = [a.name for a in node.names]
                if node.module != "crossmodal.notebook" or any(n.startswith("_") for n in names):
                    bad.append(f"{path.relative_to(LIB)}:{node.lineno}: {node.module} {names}")
    assert not bad, "\n".join(bad)
