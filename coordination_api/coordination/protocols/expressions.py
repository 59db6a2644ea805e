"""FHIRPath in protocols: applicability conditions and dynamic values (R4 PlanDefinition.action.condition,
dynamicValue), evaluated within bounds."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from coordination_api.coordination.protocols.model import FHIRPATH, Context
from coordination_api.errors import Category, FhirError
from fhir_profiles import fhirpath_safety
from fhir_profiles.validator import syntax_error

_R4 = fhirpath_models["r4"]


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Callable[..., list[Any]] | str:
    """The expression parsed once (fhirpathpy's ANTLR parser costs tens of milliseconds a parse;
    a protocol's expressions run on every discharge), or why it does not parse."""
    error = syntax_error(expression)
    if error:
        return error
    # matches()/replaceMatches() with a regex timeout (fhir_profiles/fhirpath_safety.py).
    compiled: Callable[..., list[Any]] = fhirpathpy.compile(expression, _R4, fhirpath_safety.OPTIONS)
    return compiled


def _run(expression: str, ctx: Context, where: str) -> list[Any]:
    """A FHIRPath expression over the Patient, with the variables of :meth:`Context.variables`."""
    if len(expression) > ctx.limits.max_expression:
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: the expression is longer than the limit of {ctx.limits.max_expression} characters",
            expression=where,
        )
    compiled = _compiled(expression)
    if isinstance(compiled, str):
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression does not parse ({compiled})", expression=where
        )
    env = ctx.variables(expression)
    try:
        # Caller-supplied (a PlanDefinition anyone with write access stored): a time budget for the
        # whole evaluation and a timeout for each regex.
        result: list[Any] = fhirpath_safety.bounded(lambda: compiled(ctx.patient, env), ctx.limits)
    except fhirpath_safety.ExpressionLimitError as exc:
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression was stopped: {exc.message}", expression=where
        ) from None
    except Exception as exc:  # fhirpathpy raises bare exceptions on evaluation errors
        raise FhirError(
            Category.UNPROCESSABLE, f"{where}: the expression cannot be evaluated ({exc})", expression=where
        ) from exc
    return result


def evaluate(expression: str, ctx: Context, where: str) -> bool:
    """An applicability expression: true, or false/empty (anything else is an error, 422)."""
    result = _run(expression, ctx, where)
    if result in ([], [False]):
        return False
    if result == [True]:
        return True
    raise FhirError(
        Category.UNPROCESSABLE, f"{where}: the expression must give one boolean", expression=where
    )


def _fhirpath_expression(holder: dict[str, Any], where: str) -> str:
    expression = holder.get("expression") or {}
    if expression.get("language") != FHIRPATH or not isinstance(expression.get("expression"), str):
        raise FhirError(
            Category.UNPROCESSABLE,
            f"{where}: only inline '{FHIRPATH}' expressions are supported",
            expression=where,
        )
    return str(expression["expression"])


# What a dynamicValue may not rewrite: the kind and identity of the request the engine builds.
_FIXED_ELEMENTS = frozenset({"resourceType", "id", "meta", "contained", "implicitRules"})


def apply_dynamic_values(
    body: dict[str, Any], holders: list[tuple[dict[str, Any], str]], ctx: Context
) -> None:
    """``dynamicValue`` of the ActivityDefinition, then of the action: the value at a dotted path of the
    request (R4: "the path … of the resource"); an empty result leaves the element out."""
    for holder, where in holders:
        for index, dynamic in enumerate(holder.get("dynamicValue") or []):
            at = f"{where}.dynamicValue[{index}]"
            path = dynamic.get("path")
            if not isinstance(path, str) or not path or not all(p.isidentifier() for p in path.split(".")):
                raise FhirError(
                    Category.UNPROCESSABLE, f"{at}.path must be a dotted element path", expression=at
                )
            if path.split(".")[0] in _FIXED_ELEMENTS:
                raise FhirError(
                    Category.UNPROCESSABLE,
                    f"{at}.path may not set '{path.split('.')[0]}' (the request's identity is the engine's)",
                    expression=at,
                )
            result = [
                v if isinstance(v, str | int | float | bool | dict | list) else str(v)
                for v in _run(_fhirpath_expression(dynamic, f"{at}.expression"), ctx, f"{at}.expression")
            ]
            *parents, leaf = path.split(".")
            node = body
            for name in parents:
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    raise FhirError(
                        Category.UNPROCESSABLE, f"{at}.path crosses a repeating element", expression=at
                    )
                node = child
            if not result:
                node.pop(leaf, None)
            else:
                node[leaf] = result[0] if len(result) == 1 else result


def applicable(action: dict[str, Any], ctx: Context, where: str) -> bool:
    """Every applicability condition of the action holds (start/stop conditions are not evaluated)."""
    for index, condition in enumerate(action.get("condition") or []):
        if condition.get("kind") != "applicability":
            continue
        at = f"{where}.condition[{index}].expression"
        if not evaluate(_fhirpath_expression(condition, at), ctx, at):
            return False
    return True
