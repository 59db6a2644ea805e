"""COORDINATION_EXPORT_* settings."""

from __future__ import annotations

from coordination_api.bulk.files import export_root
from coordination_api.config import REPO_ROOT, ExportSettings, Settings


def test_export_settings_come_from_the_environment() -> None:
    env = {
        "COORDINATION_EXPORT_DIR": "/srv/exports",
        "COORDINATION_EXPORT_TTL": "600",
        "COORDINATION_EXPORT_RESOURCES_PER_FILE": "5000",
        "COORDINATION_EXPORT_MAX_JOBS_PER_CLIENT": "4",
        "COORDINATION_EXPORT_LEASE": "30",
        "COORDINATION_EXPORT_CHUNK_SIZE": "250",
        "COORDINATION_EXPORT_SLICE": "2.5",
        "COORDINATION_EXPORT_POLL_INTERVAL": "7",
        "COORDINATION_EXPORT_SETTLE": "0.5",
    }
    expected = ExportSettings("/srv/exports", 600.0, 5000, 4, 30.0, 250, 2.5, 7, 0.5)
    assert Settings.from_env(env).export == expected


def test_the_default_directory_is_under_instance() -> None:
    settings = Settings.from_env({}).export
    assert settings == ExportSettings()
    assert export_root(settings) == REPO_ROOT / "instance" / "exports"
