"""The import layering of STYLE.md, checked from the source with `ast` (nothing is imported):

* no import cycle among asr_app's modules (module-level imports, imports inside functions
  and under `if TYPE_CHECKING:` alike; a package's `__init__` re-exports are edges from
  the package);
* `asr_app.compression` (folder compression/) and `asr_app.kernels` (folder kernels/)
  import no other asr_app module, and kernels import no compression;
* only the terminal UI imports Textual or sounddevice.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name of each top-level package -> its folder (as pyproject's package-dir maps them)
PACKAGES = {
    "asr_app": ROOT / "asr_app",
    "asr_app.compression": ROOT / "compression",
    "asr_app.kernels": ROOT / "kernels",
}
UI_LIBRARIES = ("textual", "sounddevice")
# the modules allowed to import UI_LIBRARIES (each with its submodules): today only the TUI
UI_ALLOWED = ("asr_app.tui",)
# library -> the asr_app packages it may import (each with its submodules)
LIBRARY_ALLOWED = {
    "asr_app.kernels": ("asr_app.kernels",),
    "asr_app.compression": ("asr_app.compression", "asr_app.kernels"),
}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def find_modules(packages: dict[str, Path]) -> dict[str, list[Path]]:
    """{dotted module name: its files} for every .py file under each package folder.

    A package's `__init__.py` is named after the package; a mapped package's folder found
    inside another one is not walked twice. A name normally has one file; both `x.py` and
    `x/__init__.py` (a module being turned into a package) are both kept, so that the
    graph holds the imports of either.
    """
    mapped = {folder.resolve() for folder in packages.values()}
    modules: dict[str, list[Path]] = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if "__pycache__" in rel.parts or any(
                (folder / Path(*rel.parts[:i])).resolve() in mapped for i in range(1, len(rel.parts))
            ):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.setdefault(".".join([package, *parts]), []).append(path)
    return modules


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest prefix of the dotted `name` that is a known module, or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imported_names(module: str, path: Path) -> Iterator[tuple[str, str, int]]:
    """(dotted name, fallback, line) of everything `path` imports, anywhere in the file.

    `from a.b import c` yields ("a.b.c", "a.b"): the module a.b.c if there is one, else a.b
    (c is a name defined in a.b); `import a.b` yields ("a.b", "a.b"). Relative imports are
    made absolute against `module`; a constant `importlib.import_module("...")` counts too.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            for alias in node.names:
                yield (base if alias.name == "*" else f"{base}.{alias.name}"), base, node.lineno
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            yield node.args[0].value, node.args[0].value, node.lineno


def import_graph(packages: dict[str, Path]) -> tuple[dict[str, dict[str, int]], dict[str, list[tuple[str, int]]]]:
    """The module import graph of `packages`.

    Returns:
        (edges, external): edges[m] = {module of the packages that m imports: line of the
        first such import}, self-imports left out; external[m] = [(top-level name of each
        other package m imports, line)].
    """
    modules = find_modules(packages)
    known = set(modules)
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    external: dict[str, list[tuple[str, int]]] = {m: [] for m in modules}
    for module, path in ((m, p) for m, paths in modules.items() for p in paths):
        for name, fallback, line in imported_names(module, path):
            if not _within(fallback, tuple(packages)):
                external[module].append((fallback.split(".")[0], line))
                continue
            target = name if name in known else _resolve(fallback, known)
            if target is not None and target != module:
                edges[module].setdefault(target, line)
    return edges, external


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle [m0, m1, ..., m0] through each strongly connected component of more than
    one module (Tarjan's algorithm), sorted; [] for an acyclic graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(_cycle_in(set(c), edges) for c in components)


def _cycle_in(component: set[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (BFS)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w in component and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a component


def _describe(cycle: list[str], edges: dict[str, dict[str, int]]) -> str:
    """The cycle as "a:12 -> b:3 -> a": each module with the line where it imports the next."""
    return " -> ".join(f"{a}:{edges[a][b]}" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_checker_sees_the_tree():
    """The graph is not empty by mistake (wrong folder, nothing parsed): known edges exist."""
    edges, external = import_graph(PACKAGES)
    assert len(edges) > 40 and "asr_app.compression.checkpoint" in edges and "asr_app.kernels" in edges
    assert "asr_app.decoding" in edges["asr_app.transcribe"]
    assert any(name == "textual" for name, _ in external["asr_app.tui.live_app"])


def test_the_checker_finds_a_cycle(tmp_path):
    """On a made-up package: a cycle through a lazy import and a package re-export is
    reported; relative imports resolve; breaking one edge clears it."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.low import helper\n")
    (pkg / "sub" / "low.py").write_text("def helper():\n    from ..top import run\n    return run\n")
    (pkg / "top.py").write_text("from pkg.sub import helper\n\ndef run():\n    pass\n")
    (pkg / "leaf.py").write_text("import os\nfrom . import top\n")
    edges, _ = import_graph({"pkg": pkg})
    assert edges["pkg.leaf"] == {"pkg.top": 2}
    assert find_cycles(edges) == [["pkg.sub", "pkg.sub.low", "pkg.top", "pkg.sub"]]
    (pkg / "sub" / "low.py").write_text("def helper():\n    return None\n")
    assert find_cycles(import_graph({"pkg": pkg})[0]) == []


def test_no_import_cycles():
    edges, _ = import_graph(PACKAGES)
    cycles = find_cycles(edges)
    assert not cycles, "import cycles in asr_app:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_compression_and_kernels_import_no_app_module():
    edges, _ = import_graph(PACKAGES)
    bad = [
        f"{m} imports {t} (line {line})"
        for m, targets in sorted(edges.items())
        for library, allowed in LIBRARY_ALLOWED.items()
        if _within(m, (library,))
        for t, line in sorted(targets.items())
        if not _within(t, allowed)
    ]
    assert not bad, "libraries reaching into the app:\n" + "\n".join(bad)


def test_only_the_tui_imports_textual_or_sounddevice():
    _, external = import_graph(PACKAGES)
    bad = [
        f"{m} imports {name} (line {line})"
        for m, names in sorted(external.items())
        if not _within(m, UI_ALLOWED)
        for name, line in names
        if name in UI_LIBRARIES
    ]
    assert not bad, "UI libraries outside the TUI:\n" + "\n".join(bad)
