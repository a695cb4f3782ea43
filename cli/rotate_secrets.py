"""``memory-service rotate-secrets``: re-encrypt every stored secret under the first key."""

from __future__ import annotations

import argparse
import sys

from memory_service.config import Settings

NAME = "rotate-secrets"
HELP = "re-encrypt every stored secret under the first key of MEMORY_SECRETS_KEY"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.infra import db
    from memory_service.infra.secret_box import load_secret_box
    from memory_service.records.environments import reseal_secrets

    box = load_secret_box(settings)
    if box is None:
        print(
            "memory-service: set MEMORY_SECRETS_KEY (new key first, old keys after)",
            file=sys.stderr,
        )
        return 2
    url = db.resolve_database_url(settings)
    try:
        with db.wrap_db_errors_sync(), db.connect_sync(url) as conn:
            changed = reseal_secrets(conn, box, everything=True)
    finally:
        db.stop_embedded(settings)
    print(f"re-encrypted the secrets of {changed} environment(s) under the first key")
    return 0
