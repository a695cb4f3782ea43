"""The client distribution installs and imports in a fresh virtual environment without torch.

The wheel is built from ``client/`` and installed with pip into a new, empty
environment; its one dependency, httpx (and httpx's own), is made importable from
this environment's copies, so the test needs no network and stays fast.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

CLIENT = Path(__file__).resolve().parent.parent / "client"


def _closure(name: str) -> set[str]:
    """``name`` and every distribution it needs (without extras)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _link_distributions(names: set[str], site: Path) -> None:
    for name in names:
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)


def test_the_client_installs_and_imports_without_server_dependencies(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), str(CLIENT)],
        check=True,
    )
    (wheel,) = wheels.glob("memory_service_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert [r for r in requires if "extra ==" not in r] == ["httpx<1,>=0.27"]

    env = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    site = next((env / "lib").glob("python3*/site-packages"))
    _link_distributions(_closure("httpx"), site)
    probe = (
        "import sys, httpx, memory_service_client as m\n"
        "for server_only in ('torch', 'faiss', 'psycopg', 'litestar', 'numpy'):\n"
        "    try:\n"
        "        __import__(server_only)\n"
        "    except ImportError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(server_only + ' is importable')\n"
        "seen = []\n"
        "def answer(request):\n"
        "    seen.append(request.url.path)\n"
        "    return httpx.Response(200, json={'status': 'ok', 'checks': {}})\n"
        "c = m.MemoryClient('http://x', 'k', transport=httpx.MockTransport(answer))\n"
        "assert c.health()['status'] == 'ok' and seen == ['/health']\n"
        "print(m.__version__, len(m.OPERATIONS))\n"
    )
    done = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0.1.0")
