"""The house rules of ARCHITECTURE.md, checked on the import graph (grimp reads every import
statement, function-level ones included) and on the source.

Each ``*_ALLOWED`` set lists an accepted exception (issue 20 emptied them all). A new violation fails;
so does an entry that no longer applies, so the lists can only get shorter.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import grimp
import pytest

PACKAGES = ("coordination_api", "auth", "connectors", "fhir_profiles")
ROOT = Path(__file__).resolve().parents[2]

# Edges that lie on an import cycle today.
CYCLE_EDGES_ALLOWED: set[tuple[str, str]] = set()

# auth/, connectors/ and fhir_profiles/ never import coordination_api; fhir_profiles imports nothing of ours.
WRONG_WAY_ALLOWED: set[tuple[str, str]] = set()

# Below the HTTP edge nothing reaches Flask or Werkzeug, by any chain of imports.
FRAMEWORK_FREE = ("core", "storage", "search", "outbox", "coordination")
FRAMEWORK_REACH_ALLOWED: set[str] = set()

# Imports of our own modules inside a function (they hide cycles): (file, imported module).
FUNCTION_IMPORTS_ALLOWED: set[tuple[str, str]] = set()

ENVIRONMENT_READERS_ALLOWED: set[str] = set()

# storage/ runs the hooks it is given and reaches nothing of auth or of the FHIR adapters, by any chain
# of imports, its migrations included (they import frozen helpers): (storage module or migration file,
# the first forbidden module on the way).
STORAGE_FORBIDDEN = ("auth", "coordination_api.fhir")
STORAGE_REACH_ALLOWED: set[tuple[str, str]] = set()


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


@cache
def edges() -> dict[str, frozenset[str]]:
    g = graph()
    modules = sorted(m for m in g.modules if ours(m))
    return {m: frozenset(i for i in g.find_modules_directly_imported_by(m) if ours(i)) for m in modules}


def strongly_connected(adjacency: dict[str, frozenset[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in adjacency:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def cyclic_edges() -> set[tuple[str, str]]:
    adjacency = edges()
    return {
        (m, i)
        for component in strongly_connected(adjacency)
        for m in component
        for i in adjacency[m]
        if i in component
    }


def test_no_import_cycles() -> None:
    cyclic = cyclic_edges()
    new = sorted(cyclic - CYCLE_EDGES_ALLOWED)
    assert not new, f"imports that close a cycle: {new}"
    stale = sorted(CYCLE_EDGES_ALLOWED - cyclic)
    assert not stale, f"no longer on a cycle, remove from CYCLE_EDGES_ALLOWED: {stale}"


def test_cycle_finder_finds_a_cycle() -> None:
    # Positive control: the checker itself sees a three-module loop and nothing in a chain.
    loop = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert strongly_connected(loop) == [{"a", "b", "c"}]


def test_dependencies_point_one_way() -> None:
    wrong = set()
    for module, imported in edges().items():
        top = module.split(".")[0]
        for target in imported:
            target_top = target.split(".")[0]
            if top != "coordination_api" and target_top == "coordination_api":
                wrong.add((module, target))
            if top == "fhir_profiles" and target_top != "fhir_profiles":
                wrong.add((module, target))
    assert not sorted(wrong - WRONG_WAY_ALLOWED), (
        f"imports the wrong way: {sorted(wrong - WRONG_WAY_ALLOWED)}"
    )
    stale = sorted(WRONG_WAY_ALLOWED - wrong)
    assert not stale, f"fixed, remove from WRONG_WAY_ALLOWED: {stale}"


def test_framework_free_below_the_http_edge() -> None:
    g = graph()
    reaching = {}
    for module in edges():
        parts = module.split(".")
        if parts[0] != "coordination_api" or len(parts) < 2 or parts[1] not in FRAMEWORK_FREE:
            continue
        for framework in ("flask", "werkzeug"):
            chain = g.find_shortest_chain(importer=module, imported=framework)
            if chain:
                reaching[module] = chain
                break
    new = {m: c for m, c in reaching.items() if m not in FRAMEWORK_REACH_ALLOWED}
    assert not new, f"framework-free modules that reach Flask: {new}"
    stale = sorted(FRAMEWORK_REACH_ALLOWED - set(reaching))
    assert not stale, f"now framework-free, remove from FRAMEWORK_REACH_ALLOWED: {stale}"


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def function_level_imports() -> set[tuple[str, str]]:
    found = set()
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                names: list[str] = []
                if isinstance(inner, ast.ImportFrom):
                    names = ["." * inner.level + (inner.module or "")]
                elif isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                for name in names:
                    if name.startswith(".") or ours(name):
                        found.add((path.relative_to(ROOT).as_posix(), name))
    return found


def test_no_function_level_imports_of_our_modules() -> None:
    found = function_level_imports()
    new = sorted(found - FUNCTION_IMPORTS_ALLOWED)
    assert not new, f"function-level imports (move them to the top; cut the cycle they dodge): {new}"
    stale = sorted(FUNCTION_IMPORTS_ALLOWED - found)
    assert not stale, f"gone, remove from FUNCTION_IMPORTS_ALLOWED: {stale}"


def environment_readers() -> set[str]:
    readers = set()
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}) or (
                isinstance(node, ast.Name) and node.id in {"environ", "getenv"}
            ):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "request"
                ):
                    continue  # the WSGI environ of a request, not the process environment
                readers.add(path.relative_to(ROOT).as_posix())
    return readers


def test_only_config_reads_the_environment() -> None:
    readers = environment_readers() - {"coordination_api/config.py"}
    new = sorted(readers - ENVIRONMENT_READERS_ALLOWED)
    assert not new, f"modules reading the environment (use coordination_api.config): {new}"
    stale = sorted(ENVIRONMENT_READERS_ALLOWED - readers)
    assert not stale, f"no longer read the environment, remove from ENVIRONMENT_READERS_ALLOWED: {stale}"


def forbidden_in_storage(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in STORAGE_FORBIDDEN)


def imported_names(path: Path, modules: set[str]) -> set[str]:
    """Every module an import statement of ``path`` names (``from a import b``: ``a.b`` if it is a
    module, else ``a``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in modules else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def storage_reach() -> set[tuple[str, str]]:
    g = graph()
    targets = sorted(m for m in g.modules if forbidden_in_storage(m))

    def first_forbidden(module: str) -> str | None:
        if forbidden_in_storage(module):
            return module
        if module not in g.modules:
            return None
        for target in targets:
            chain = g.find_shortest_chain(importer=module, imported=target)
            if chain:
                return next(m for m in chain if forbidden_in_storage(m))
        return None

    found = set()
    for module in edges():
        if module == "coordination_api.storage" or module.startswith("coordination_api.storage."):
            hit = first_forbidden(module)
            if hit is not None:
                found.add((module, hit))
    # The migrations are no package (Alembic loads them by path): outside the graph, read their source.
    for path in sorted((ROOT / "coordination_api" / "storage" / "migrations").rglob("*.py")):
        for name in sorted(imported_names(path, g.modules)):
            if ours(name):
                hit = first_forbidden(name)
                if hit is not None:
                    found.add((path.relative_to(ROOT).as_posix(), hit))
    return found


def test_storage_reaches_nothing_of_auth_or_fhir() -> None:
    found = storage_reach()
    new = sorted(found - STORAGE_REACH_ALLOWED)
    assert not new, f"storage reaching auth/ or fhir/ (take a hook or a frozen helper instead): {new}"
    stale = sorted(STORAGE_REACH_ALLOWED - found)
    assert not stale, f"gone, remove from STORAGE_REACH_ALLOWED: {stale}"


# The write core and the domain sit below the HTTP adapters: they reach nothing of fhir/, by any chain.
BELOW_THE_ADAPTERS = ("core", "coordination")


def adapter_reach() -> set[tuple[str, str]]:
    g = graph()
    adapters = sorted(
        m for m in g.modules if m.startswith("coordination_api.fhir.") or m == "coordination_api.fhir"
    )
    found = set()
    for module in edges():
        parts = module.split(".")
        if parts[0] != "coordination_api" or len(parts) < 2 or parts[1] not in BELOW_THE_ADAPTERS:
            continue
        hit = next((a for a in adapters if g.find_shortest_chain(importer=module, imported=a)), None)
        if hit is not None:
            found.add((module, hit))
    return found


def test_core_and_domain_reach_nothing_of_the_http_adapters() -> None:
    found = sorted(adapter_reach())
    assert not found, f"core/ or coordination/ reaching fhir/ (move the helper below, into core/): {found}"


@pytest.mark.parametrize("rule", ["cycle", "one_way", "storage", "adapters"])
def test_rules_catch_a_planted_violation(rule: str) -> None:
    # Positive control on the real graph: a planted import is reported by the same computation.
    g = graph()
    if rule == "cycle":
        g.add_import(importer="coordination_api.storage.engine", imported="coordination_api.app")
        try:
            edges.cache_clear()
            assert ("coordination_api.storage.engine", "coordination_api.app") in cyclic_edges()
        finally:
            g.remove_import(importer="coordination_api.storage.engine", imported="coordination_api.app")
            edges.cache_clear()
    elif rule == "storage":
        # Two imports away: search/ (which storage imports) planted to import auth.
        g.add_import(importer="coordination_api.search.dates", imported="auth.scopes")
        try:
            assert ("coordination_api.storage.repository", "auth.scopes") in storage_reach()
        finally:
            g.remove_import(importer="coordination_api.search.dates", imported="auth.scopes")
    elif rule == "adapters":
        g.add_import(importer="coordination_api.core.json_types", imported="coordination_api.fhir.read")
        try:
            # Two imports away, through json_types; the first adapter named is any that fhir.read reaches.
            assert "coordination_api.core.validation" in {module for module, _ in adapter_reach()}
        finally:
            g.remove_import(
                importer="coordination_api.core.json_types", imported="coordination_api.fhir.read"
            )
    else:
        assert g.find_shortest_chain(importer="coordination_api.app", imported="flask")
