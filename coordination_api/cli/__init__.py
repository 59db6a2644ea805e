"""The ``coordination`` console script (click, through Flask's CLI): one module per command group,
all registered here on ``main``. The app factory knows nothing of the CLI."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from coordination_api.app import create_app
from coordination_api.cli.clients import clients
from coordination_api.cli.connectors import connectors_group
from coordination_api.cli.db import db
from coordination_api.cli.demo import demo_command
from coordination_api.cli.importing import import_command
from coordination_api.cli.jobs import jobs_group
from coordination_api.cli.keys import keys
from coordination_api.cli.mllp import mllp
from coordination_api.cli.protocols import protocols_group
from coordination_api.cli.serve import serve
from coordination_api.cli.settings import settings_command
from coordination_api.cli.users import users
from coordination_api.cli.worker import worker
from coordination_api.integrations.annuaire_sync import directory_group


# load_dotenv=False: python-dotenv (a dependency of pydantic-settings) would otherwise pour a .env file of
# the working directory into the environment behind config.py's back.
@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
)
def main() -> None:
    """CPTS care-coordination FHIR backend."""


for _command in (
    serve,
    worker,
    mllp,
    db,
    import_command,
    clients,
    users,
    keys,
    protocols_group,
    jobs_group,
    demo_command,
    connectors_group,
    directory_group,
    settings_command,
):
    main.add_command(_command)
