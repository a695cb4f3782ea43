"""``memory-service settings-reference``: the Markdown reference of every setting."""

from __future__ import annotations

import argparse

from memory_service.config import Settings, settings_reference

NAME = "settings-reference"
HELP = "print the Markdown reference of every MEMORY_* setting"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(settings_reference(), end="")
    return 0
