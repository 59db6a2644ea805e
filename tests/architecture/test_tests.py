"""Test modules import nothing from one another (issue 20): shared builders live in tests/factories.py,
shared helpers and fixtures in tests/support/ or a conftest.py. Importing a test module runs its module
code twice under two names and drags its autouse fixtures along."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules (``test_*``) that ``source``, a module of ``package``, imports, by dotted name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if _is_test_module(base):
                found.append(base)
            # ``from tests.auth import test_security``: the imported name is itself a test module.
            found += [f"{base}.{alias.name}" for alias in node.names if _is_test_module(alias.name)]
    return found


def test_no_module_under_tests_imports_a_test_module() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(TESTS.parent).parent.parts)
        imported = imported_test_modules(path.read_text(encoding="utf-8"), package)
        if imported:
            offenders[str(path.relative_to(TESTS.parent))] = imported
    assert offenders == {}, "move the shared helpers to tests/factories.py or tests/support/"


def test_the_check_sees_every_form_of_import() -> None:
    """Positive control: each way of importing a test module is caught; helpers and conftest are not."""
    source = """
import tests.auth.test_security
from tests.auth.test_security import _login
from tests.auth import test_openid, oidc_provider
from .test_delivery import active
from . import test_limits


def late() -> None:
    from tests.ops.test_shutdown import free_port
"""
    assert imported_test_modules(source, "tests.subscriptions") == [
        "tests.auth.test_security",
        "tests.auth.test_security",
        "tests.auth.test_openid",
        "tests.subscriptions.test_delivery",
        "tests.subscriptions.test_limits",
        "tests.ops.test_shutdown",
    ]
    allowed = """
from tests.conftest import Fhir
from tests.factories import patient
from tests.support.auth import user_token
from tests.subscriptions.conftest import Receiver
"""
    assert imported_test_modules(allowed, "tests.subscriptions") == []
