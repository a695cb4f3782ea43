"""The HTTP side of ``memory-service export`` and ``import``: a tenant to and from a file.

Both talk to a running service over HTTP with the tenant's API key, so they
work against any deployment, and both stream: the export is written to the
file as it arrives, the import is sent from the file as the service takes it
in. A tqdm bar shows the bytes moved (the import bar also shows the service's
pace, since it reads only as fast as it writes); the import's report is printed
as JSON. ``cli.export`` and ``cli.import_`` are the subcommands around them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from tqdm import tqdm

CHUNK = 256 * 1024
TIMEOUT = httpx.Timeout(60.0, read=None)  # an import re-embedding a large tenant takes long


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="base URL of the service, e.g. http://host:8080")
    p.add_argument("--key", required=True, help="the tenant's API key")


def export_args(p: argparse.ArgumentParser) -> None:
    _connection_args(p)
    p.add_argument("-o", "--output", required=True, help="NDJSON file to write ('-': stdout)")
    p.add_argument("--types", default="environments,tasks,executions,memories",
                   help="comma list of memories, tasks, environments, executions, events")
    p.add_argument("--include-history", action="store_true", help="memories with history")
    p.add_argument("--include-secret-values", action="store_true",
                   help="secret values too (needs --admin-token)")
    p.add_argument("--admin-token", help="the service's admin token")
    p.add_argument("--events-since", help="RFC 3339 time: events from then on")
    p.add_argument("--events-until", help="RFC 3339 time: events before then")


def import_args(p: argparse.ArgumentParser) -> None:
    _connection_args(p)
    p.add_argument("input", help="NDJSON file written by `memory-service export`")
    p.add_argument("--on-conflict", choices=("skip", "overwrite", "fail"), default="skip")
    p.add_argument("--dry-run", action="store_true", help="report only; write nothing")


def _fail(response: httpx.Response) -> int:
    response.read()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    print(f"memory-service: {response.status_code}: {detail}", file=sys.stderr)
    return 1


def run_export(args: argparse.Namespace) -> int:
    params: dict[str, str] = {"types": args.types}
    for flag in ("include_history", "include_secret_values"):
        if getattr(args, flag):
            params[flag] = "true"
    for name in ("events_since", "events_until"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    headers = {"Authorization": f"Bearer {args.key}"}
    if args.admin_token:
        headers["X-Admin-Token"] = args.admin_token
    url = args.url.rstrip("/") + "/v1/export"
    out = sys.stdout.buffer if args.output == "-" else Path(args.output).open("wb")  # noqa: SIM115
    lines = 0
    try:
        with (
            httpx.stream("GET", url, params=params, headers=headers, timeout=TIMEOUT) as response,
            tqdm(unit="B", unit_scale=True, desc="export", file=sys.stderr) as bar,
        ):
            if response.status_code != 200:
                return _fail(response)
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                lines += chunk.count(b"\n")
                bar.update(len(chunk))
                bar.set_postfix(lines=lines, refresh=False)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


def _chunks(path: Path, bar: tqdm) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            bar.update(len(chunk))
            yield chunk


def run_import(args: argparse.Namespace) -> int:
    path = Path(args.input)
    if not path.is_file():
        print(f"memory-service: no such file: {path}", file=sys.stderr)
        return 2
    params = {"on_conflict": args.on_conflict}
    if args.dry_run:
        params["dry_run"] = "true"
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/x-ndjson"}
    url = args.url.rstrip("/") + "/v1/import"
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="import",
              file=sys.stderr) as bar:
        response = httpx.post(url, params=params, headers=headers,
                              content=_chunks(path, bar), timeout=TIMEOUT)
    if response.status_code != 200:
        return _fail(response)
    print(json.dumps(response.json(), indent=2))
    return 0

