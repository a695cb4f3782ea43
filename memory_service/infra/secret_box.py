"""Encryption of environment secrets at rest (Fernet from the ``cryptography`` package).

``SecretBox`` seals a secret value into ``fernet:<token>`` (AES-128-CBC with an
HMAC-SHA256, a timestamp and a random IV per value) and can re-seal a value
under its first key. Keys come from ``MEMORY_SECRETS_KEY``: comma-separated
Fernet keys, the first one encrypts, all of them decrypt, which is how a key is
rotated (put the new key first, run ``memory-service rotate-secrets``, drop the
old key). With the embedded development database and no key set, a key is
generated once into ``<data_dir>/secrets.key`` (mode 0600), so ``make run`` and
the tests work out of the box; a service on an external database without a key
refuses to start once secrets exist (see ``runtime``).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from memory_service.config import Settings, SettingsError

PREFIX = "fernet:"
KEY_FILE = "secrets.key"


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SettingsError("MEMORY_SECRETS_KEY holds no key")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except ValueError as exc:
            raise SettingsError(
                "MEMORY_SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes each), "
                "comma-separated; `memory-service new-secrets-key` prints one"
            ) from exc

    def seal(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            return sealed  # stored before encryption was introduced
        try:
            return self._fernet.decrypt(sealed[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SettingsError("a stored secret does not open with any configured key") from exc

    def reseal(self, stored: str) -> str:
        """The value sealed under the first key (plain text from before is sealed too)."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SettingsError("a stored secret does not open with any configured key") from exc


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_secret_box(settings: Settings) -> SecretBox | None:
    """The configured box, a generated one for the embedded database, or None."""
    if settings.secrets_key:
        return SecretBox([k.strip().encode() for k in settings.secrets_key.split(",") if k.strip()])
    if settings.database_url:
        return None
    return SecretBox([_local_key(settings.data_path / KEY_FILE)])


def _local_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key().encode()
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    try:
        os.link(draft, path)  # atomic: the first process on this data directory wins
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        draft.unlink()
    return key
