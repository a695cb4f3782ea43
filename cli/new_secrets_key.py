"""``memory-service new-secrets-key``: print a fresh key for ``MEMORY_SECRETS_KEY``."""

from __future__ import annotations

import argparse

from memory_service.config import Settings

NAME = "new-secrets-key"
HELP = "print a new key for MEMORY_SECRETS_KEY"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    from memory_service.infra.secret_box import new_key

    print(new_key())
    return 0
