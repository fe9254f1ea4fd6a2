"""OAuth tokens per remote, in one file readable by the user only, shared safely by several bridge copies.

One JSON file per remote (keyed by the resource URL) holds everything one sign-in
produced: the tokens with their absolute expiry (the SDK's `OAuthToken` only has
a relative `expires_in`, so a restarted bridge could not tell an expired token),
the registered client, and the discovered metadata (so a refresh after a restart
goes to the real token endpoint). One file, so a client registration and the
tokens issued to it can never come from two different copies.

Every write replaces the file in one rename and stamps a new `version`: a copy
that waited for the lock compares it with the version it last saw, and adopts
what another copy did instead of repeating it (see `oauth.py`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata

from bridge.auth.paths import store_path
from bridge.logs import SecretList


class TokenStore:
    """The SDK's `TokenStorage` over one JSON file, plus what the bridge's provider needs."""

    def __init__(self, directory: Path, resource_url: str, secrets: SecretList) -> None:
        self.folder = store_path(directory, resource_url)
        self.path = self.folder / "oauth.json"
        self.resource_url = resource_url
        self.secrets = secrets
        self.loaded_version: str | None = None
        self._stamp: tuple[int, int] | None = None
        self.lock = FileLock(str(self.folder / "oauth.lock"), thread_local=False)

    # --- the file ------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable or damaged: as if nothing were stored (a sign-in rewrites it)
        if isinstance(data, dict):
            self._learn_secrets(data)
            return data
        return {}

    def _learn_secrets(self, data: dict[str, Any]) -> None:
        tokens: dict[str, Any] = data["tokens"] if isinstance(data.get("tokens"), dict) else {}
        client: dict[str, Any] = data["client_info"] if isinstance(data.get("client_info"), dict) else {}
        values = [tokens.get("access_token"), tokens.get("refresh_token"), client.get("client_secret")]
        self.secrets.add([value for value in values if isinstance(value, str)])

    def _write(self, **changes: Any) -> None:
        data = self.read()
        data.update(changes)
        data["resource"] = self.resource_url
        data["version"] = uuid.uuid4().hex
        self._learn_secrets(data)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".oauth-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.loaded_version = data["version"]

    def disk_version(self) -> str | None:
        version = self.read().get("version")
        return version if isinstance(version, str) else None

    def changed_elsewhere(self) -> bool:
        """Whether another copy rewrote the file since this one last read or wrote it (a stat when it did not)."""
        try:
            info = os.stat(self.path)
            stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return False
        self._stamp = stamp
        return self.disk_version() != self.loaded_version

    def forget(self) -> bool:
        """Delete everything stored for this remote (logout); False when nothing was stored."""
        existed = self.path.exists()
        self.path.unlink(missing_ok=True)
        (self.folder / "oauth.lock").unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass
        self.loaded_version = None
        return existed

    # --- the SDK's TokenStorage protocol ---------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        data = self.read()
        self.loaded_version = data.get("version")
        try:
            return OAuthToken.model_validate(data["tokens"]) if data.get("tokens") else None
        except ValueError:
            return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None
        self._write(tokens=tokens.model_dump(mode="json", exclude_none=True), expires_at=expires_at)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        data = self.read()
        try:
            return OAuthClientInformationFull.model_validate(data["client_info"]) if data.get("client_info") else None
        except ValueError:
            return None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._write(client_info=client_info.model_dump(mode="json", exclude_none=True))

    # --- what the bridge adds -------------------------------------------------------------

    def expires_at(self) -> float | None:
        value = self.read().get("expires_at")
        return float(value) if isinstance(value, (int, float)) else None

    def callback_port(self) -> int | None:
        """The loopback port the stored client was registered with (registration pins it)."""
        client = self.read().get("client_info")
        uris = client.get("redirect_uris") if isinstance(client, dict) else None
        if not uris:
            return None
        try:
            from urllib.parse import urlsplit

            return urlsplit(str(uris[0])).port
        except ValueError:
            return None

    def forget_client(self) -> None:
        """Drop the registered client (and the tokens issued to it): the next sign-in registers again."""
        self._write(client_info=None, tokens=None, expires_at=None)

    def save_metadata(self, as_metadata: OAuthMetadata | None, prm: ProtectedResourceMetadata | None) -> None:
        data = self.read()
        new_as = as_metadata.model_dump(mode="json", exclude_none=True) if as_metadata else None
        new_prm = prm.model_dump(mode="json", exclude_none=True) if prm else None
        if data.get("as_metadata") != new_as or data.get("prm") != new_prm:
            self._write(as_metadata=new_as, prm=new_prm)

    def metadata(self) -> tuple[OAuthMetadata | None, ProtectedResourceMetadata | None]:
        data = self.read()
        try:
            as_metadata = OAuthMetadata.model_validate(data["as_metadata"]) if data.get("as_metadata") else None
            prm = ProtectedResourceMetadata.model_validate(data["prm"]) if data.get("prm") else None
        except ValueError:
            return None, None
        return as_metadata, prm
