"""The shape of the tree, read from the source with ``ast`` (nothing is imported): the
module import graph under ``vfstream/`` has no cycles, and the lower rooms (``sources``,
``sinks``, ``domain``) never reach up into the operator's rooms (``ops``, ``cli``, ``web``),
only the command line imports the command line, and the sinks never reach back into the
sources.

Every import counts, a function-local or ``TYPE_CHECKING`` one too: a lazy import that
dodges a cycle at run time still ties the two modules together for a reader. A package's
``__init__`` is counted only where it is imported by name, so a package re-exporting its
own modules (``vfstream/kafka/__init__.py``) is not a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "vfstream"

LOWER_ROOMS = frozenset({"sources", "sinks", "domain"})
OPERATOR_ROOMS = frozenset({"ops", "cli", "web"})


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    """Each dotted name a module's imports may refer to; the caller keeps those that are
    modules (``from a import b`` names module ``a.b`` when ``b`` is one, else ``a``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target in imported_names(tree, package):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = lowlink[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_vfstream_import_graph_has_no_cycles() -> None:
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_sources_sinks_and_domain_never_import_ops_cli_or_web() -> None:
    climbs = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph(ROOT).items()
        for target in targets
        if room(module) in LOWER_ROOMS and room(target) in OPERATOR_ROOMS
    )
    assert not climbs, "lower rooms importing operator rooms:\n" + "\n".join(climbs)


def test_only_the_command_line_imports_the_command_line() -> None:
    # Exit statuses are decided in vfstream/cli/ from the exceptions of vfstream/errors.py;
    # a library module that imported them would be a command body living outside cli/.
    outside = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph(ROOT).items()
        for target in targets
        if room(target) == "cli" and room(module) != "cli"
    )
    assert not outside, "modules outside cli/ importing it:\n" + "\n".join(outside)


def test_sinks_never_import_sources() -> None:
    # A client both sides use lives beside the rooms (vfstream/services/), not in one of them.
    sideways = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph(ROOT).items()
        for target in targets
        if room(module) == "sinks" and room(target) == "sources"
    )
    assert not sideways, "sinks importing sources:\n" + "\n".join(sideways)


def test_the_scan_sees_a_cycle_closed_by_a_function_local_import(tmp_path: Path) -> None:
    # The guard is only as good as the scan: a lazy import is how cycles hide.
    package = tmp_path / "vfstream"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("from vfstream.low import b\n")
    (package / "low" / "b.py").write_text("def f():\n    from . import a\n")
    (package / "ops.py").write_text("")
    (package / "low" / "c.py").write_text("import vfstream.ops\n")
    graph = import_graph(package)
    assert cycles(graph) == [["vfstream.low.a", "vfstream.low.b"]]
    assert graph["vfstream.low.c"] == {"vfstream.ops"}
