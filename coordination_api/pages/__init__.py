"""The coordinators' web pages under ``/app/`` (French, server-rendered): the HTTP edge for people,
beside ``web/`` and ``fhir/`` for programs, on the same rules as the FHIR API.

Layout:

- ``blueprint.py``: the ``pages`` blueprint (``url_prefix="/app"``, templates in ``templates/``,
  the stylesheet and the one small script in ``static/``, served at ``/app/static/``). Its hooks, for
  every route registered on it:
  - sign-in: the login page's session (``auth/browser.py``, ``/auth/login``; Pro Santé Connect too); a
    visitor without one is sent there (303) with ``next`` back to the page (GET) or to ``/app/``;
  - the signed-in user becomes a ``Principal`` (``page_principal``: user-level scopes ``PAGE_SCOPES``,
    the client id ``PAGE_CLIENT``) set as ``g.principal`` and ``core.principal`` exactly as a bearer
    token's is: the care-team rule, the offers and the write guard of ``auth/policy`` judge the page's
    reads and writes as they judge the API's;
  - every POST must carry the session's CSRF token (form field ``csrf_token``; ``render.show`` gives
    templates ``csrf_token``): otherwise 400;
  - the audit: an ``AuditRecord`` per request (GET ``search-type``, POST ``update``; a view may set
    ``g.audit.subtype``), written as the API's are (``fhir/access.audit_response`` after the request,
    ``audit_in_transaction`` with a write);
  - errors: views raise ``FhirError`` (or ``PageError``, whose message is French and shown as is); the
    one translator (``web/errors.py``) renders them with ``pages_error.html`` for this blueprint.
- ``data.py``: the only way views reach data: ``search`` (the FHIR search compiler, secured by
  ``fhir/access.secure``, noted for the audit), ``read`` (``access.read_current`` + ``check_reach``) and
  ``update`` (``core/writes.update`` with If-Match: the repository's guard and dispatch's
  first-to-accept rule). Never a query of its own on resource tables.
- ``render.py``: ``show(template, **context)``, the page with its CSP (``auth/browser.page``); common
  helpers for templates (names, dates).
- ``worklist.py``: ``GET /app/`` (« Sorties à suivre », « Tâches à prendre », « Mes tâches ») and the
  Task actions (``POST /app/tasks/<id>/accept|assign|complete|cancel``).
- ``routes.py``: ``register(app)``; imports every view module so that its routes are on ``bp``.

Adding a page (e.g. ``patient.py`` for ``GET /app/patients/<id>``): a module that imports ``bp`` from
``blueprint.py`` and registers routes on it, reading through ``data.py`` and answering with
``render.show``; a template ``templates/<name>.html`` extending ``pages_base.html`` (blocks ``title``
and ``main``; template names are one namespace for the whole app: ``auth`` has ``base.html`` and
``error.html``); the module imported in ``routes.py``. Scopes a new page needs go into ``PAGE_SCOPES``.
"""
