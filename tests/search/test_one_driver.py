"""SQLite: of several index semi-joins, one drives and the others are correlated EXISTS (issue 21: the
name + birthdate search built the list of half the Patients on every request). Structure only here;
tests/search checks the results on both databases."""

from __future__ import annotations

from flask import Flask

from coordination_api.search.compiler import SearchCompiler


def _sql(app: Flask, params: list[tuple[str, str]]) -> str:
    svc = app.extensions["coordination"]
    compiler = SearchCompiler(svc.repo.registry, dialect="sqlite")
    return str(compiler.compile("Patient", params).select_page(21))


def test_the_identifier_drives_and_the_date_range_is_probed(app: Flask) -> None:
    sql = _sql(app, [("birthdate", "ge1975-01-01"), ("identifier", "urn:oid:1.2.3|42"), ("name", "mar")])
    assert sql.count("EXISTS") == 2
    driver = sql.split("resource.pk IN (SELECT ", 1)[1]
    assert driver.startswith("idx_token.res_pk"), "the token criterion drives (fewest rows)"


def test_one_criterion_stays_a_plain_semi_join(app: Flask) -> None:
    sql = _sql(app, [("name", "martin")])
    assert "EXISTS" not in sql and "resource.pk IN (SELECT idx_string.res_pk" in sql


def test_a_reference_drives_before_a_bare_code(app: Flask) -> None:
    # CarePlan?patient=X&status=active: the status names a large share of the type, the patient a few.
    svc = app.extensions["coordination"]
    compiler = SearchCompiler(svc.repo.registry, dialect="sqlite")
    sql = str(compiler.compile("CarePlan", [("status", "active"), ("patient", "Patient/p1")]).select_page(21))
    assert sql.count("EXISTS") == 1
    driver = sql.split("resource.pk IN (SELECT ", 1)[1]
    assert driver.startswith("idx_reference.res_pk"), "the reference drives, the bare code is probed"


def test_a_name_drives_before_a_bare_code(app: Flask) -> None:
    sql = _sql(app, [("gender", "female"), ("name", "martin")])
    driver = sql.split("resource.pk IN (SELECT ", 1)[1]
    assert driver.startswith("idx_string.res_pk")


def test_a_reference_with_our_base_is_one_select_per_alternative_and_drives(app: Flask) -> None:
    # patient= is "type and id, or our own absolute URL": SQLite scanned every row of the parameter
    # for the OR (74 ms at 120k rows); a UNION looks each alternative up through its own index.
    svc = app.extensions["coordination"]
    compiler = SearchCompiler(svc.repo.registry, dialect="sqlite")
    params = [("status", "active"), ("patient", "Patient/p1")]
    sql = str(compiler.compile("CarePlan", params, base_url="http://x/fhir").select_page(21))
    assert "UNION" in sql and sql.count("EXISTS") == 1
    driver = sql.split("resource.pk IN (SELECT ", 1)[1]
    assert driver.startswith("idx_reference.res_pk"), "the reference (a UNION) drives"


def test_many_references_make_one_lookup_per_type_and_one_for_urls(app: Flask) -> None:
    # The worklist asks Task?encounter=<100 ids>: one IN per type and one for our own absolute URLs,
    # each looked up through its index, instead of 200 ORed alternatives over every row of the param.
    svc = app.extensions["coordination"]
    compiler = SearchCompiler(svc.repo.registry, dialect="sqlite")
    ids = ",".join(f"Encounter/e{i}" for i in range(30))
    sql = str(compiler.compile("Task", [("encounter", ids)], base_url="http://x/fhir").select_page(21))
    assert sql.count("UNION") == 1 and sql.count(" IN (__[POSTCOMPILE") == 2, sql
