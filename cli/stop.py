"""``memory-service stop``: stop the services and the embedded PostgreSQL of a data dir."""

from __future__ import annotations

import argparse

from memory_service.config import Settings

NAME = "stop"
HELP = "stop the service processes and the embedded PostgreSQL of MEMORY_DATA_DIR"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.infra import db

    if settings.database_url:
        print("memory-service: MEMORY_DATABASE_URL is set; there is no embedded database to stop")
        return 0
    print(db.stop_data_dir(settings))
    return 0
