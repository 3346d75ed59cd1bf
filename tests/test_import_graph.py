"""The import graph of src/pianolab has no cycle: each package uses only those below it.

Every module is parsed with `ast` and every import statement counts, at module level or inside a
function (a deferred import is still a dependency), except those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is package)} of every module under src/pianolab."""
    out = {}
    for path in sorted((src / "pianolab").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imported(name: str, path: Path, package: bool, known: dict) -> set[str]:
    """The pianolab modules that module `name` imports."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    here = name if package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` names a submodule when one exists, else something in pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def import_graph(src: Path = SRC) -> nx.DiGraph:
    known = modules(src)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, (path, package) in known.items():
        graph.add_edges_from((name, target) for target in imported(name, path, package, known))
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Every elementary import cycle, each starting at its smallest module name."""
    out = []
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        out.append(cycle[start:] + cycle[:start])
    return sorted(out)


def test_the_graph_sees_deferred_imports(tmp_path):
    pkg = tmp_path / "pianolab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pianolab.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    return x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pianolab import a\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["pianolab.a", "pianolab.sub.b"]]
    assert not list(graph.successors("pianolab.c"))


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in found)
