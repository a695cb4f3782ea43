"""Environment secrets are encrypted at rest, rotate by re-encryption, and need a key.

The stored value is a Fernet token, never the plain text; with the embedded
database the key is generated once into the data directory (mode 0600);
``rotate-secrets`` re-seals every value under a new first key after which the old
key alone no longer opens them; and a service on a database that holds secrets
refuses to start without a key.
"""

from __future__ import annotations

import argparse
import stat
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cli import rotate_secrets
from memory_service.config import Settings, SettingsError
from memory_service.infra.secret_box import KEY_FILE, SecretBox, load_secret_box, new_key
from memory_service.records.environments import check_secrets_at_rest


def stored_secrets(database_url: str, env_id: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT secrets FROM environments WHERE id = %s", (uuid.UUID(env_id),)).fetchone()
    assert row is not None
    return dict(row[0])


async def create_env(client: Any, tenant: dict, secret: str) -> str:
    body = {"name": f"env-{uuid.uuid4().hex[:6]}", "secrets": {"API_TOKEN": secret}}
    r = await client.post("/v1/environments", json=body, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    assert secret not in r.text
    return str(r.json()["id"])


async def test_secrets_are_stored_encrypted(client: Any, tenant: dict, database_url: str, settings: Settings) -> None:
    env_id = await create_env(client, tenant, "sk-live-plaintext-123")
    r = await client.patch(f"/v1/environments/{env_id}", json={"secrets": {"OTHER": "second-value"}}, headers=tenant["headers"])
    assert r.status_code == 200, r.text
    stored = stored_secrets(database_url, env_id)
    assert set(stored) == {"API_TOKEN", "OTHER"}
    assert all(v.startswith("fernet:") for v in stored.values()), stored
    assert "sk-live-plaintext-123" not in str(stored) and "second-value" not in str(stored)
    assert settings.secrets_key is not None
    box = SecretBox([settings.secrets_key.encode()])
    assert box.open(stored["API_TOKEN"]) == "sk-live-plaintext-123"


def test_the_embedded_database_gets_a_generated_key_file(tmp_path: Path) -> None:
    local = Settings(data_dir=str(tmp_path), secrets_key=None)
    first, again = load_secret_box(local), load_secret_box(local)
    assert first is not None and again is not None
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert again.open(first.seal("v")) == "v"
    assert load_secret_box(Settings(data_dir=str(tmp_path), database_url="postgresql://x/y")) is None


def test_sealing_is_randomised_and_rotation_reseals() -> None:
    old, new = new_key().encode(), new_key().encode()
    sealed = SecretBox([old]).seal("v")
    assert sealed != SecretBox([old]).seal("v")
    rotated = SecretBox([new, old]).reseal(sealed)
    assert SecretBox([new]).open(rotated) == "v"
    with pytest.raises(SettingsError):
        SecretBox([old]).open(rotated)
    with pytest.raises(SettingsError):
        SecretBox([b"not a key"])


async def test_rotate_command_and_keyless_start_is_refused(
    client: Any, tenant: dict, database_url: str, settings: Settings, tmp_path: Path
) -> None:
    env_id = await create_env(client, tenant, "rotate-me")
    assert settings.secrets_key is not None
    current = settings.secrets_key
    fresh = new_key()
    # every secret in this database, from any test, was sealed with the session key
    rotating = settings.with_(database_url=database_url, secrets_key=f"{fresh},{current}")
    assert rotate_secrets.run(argparse.Namespace(), rotating) == 0
    value = stored_secrets(database_url, env_id)["API_TOKEN"]
    assert SecretBox([fresh.encode()]).open(value) == "rotate-me"
    # rotate back so the running app's key opens everything again
    back = settings.with_(database_url=database_url, secrets_key=f"{current},{fresh}")
    assert rotate_secrets.run(argparse.Namespace(), back) == 0
    keyless = settings.with_(database_url=database_url, secrets_key=None, data_dir=str(tmp_path))
    with pytest.raises(SettingsError, match="MEMORY_SECRETS_KEY"):
        check_secrets_at_rest(database_url, keyless)
