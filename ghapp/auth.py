"""GitHub App authentication: the App's JWT (RS256) and the per-installation access-token cache."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ghapp.cache import Expiring, ExpiringCache
from ghapp.clock import Clock
from ghapp.errors import ConfigError
from ghapp.sensitive import Secret

JWT_BACKDATE = 60
"""``iat`` lies this far in the past, to allow for clock drift (GitHub's advice)."""
JWT_LIFETIME = 540
"""``exp`` lies this far after now: under GitHub's 10-minute maximum even with some drift."""
TOKEN_REFRESH_MARGIN = 300.0
"""An installation token is replaced this many seconds before it expires."""


class AppAuth:
    """Signs the App's JWTs, reusing one until a minute before it expires."""

    def __init__(self, *, app_id: str, private_key_pem: Secret, clock: Clock) -> None:
        self._app_id = app_id
        key = load_pem_private_key(private_key_pem.reveal().encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ConfigError("GHAPP_PRIVATE_KEY: a GitHub App key is an RSA key; this is another kind")
        self._key = key
        self._clock = clock
        self._current: Expiring[Secret] | None = None

    def jwt(self) -> Secret:
        """A JWT for ``Authorization: Bearer``: ``iat`` 60 s in the past, ``exp`` 9 minutes ahead."""
        now = self._clock.now()
        if self._current is not None and self._current.expires_at - 60 > now:
            return self._current.value
        issued = int(now) - JWT_BACKDATE
        expires = int(now) + JWT_LIFETIME
        token = jwt.encode({"iat": issued, "exp": expires, "iss": self._app_id}, self._key, algorithm="RS256")
        self._current = Expiring(Secret(token), float(expires))
        return self._current.value


class InstallationTokens:
    """Installation access tokens, minted on demand per installation, shared and refreshed before expiry."""

    def __init__(self, *, mint: Callable[[int], Awaitable[Expiring[Secret]]], clock: Clock) -> None:
        self._cache: ExpiringCache[int, Secret] = ExpiringCache(
            fetch=mint, clock=clock, margin=TOKEN_REFRESH_MARGIN
        )

    async def get(self, installation_id: int) -> Secret:
        """A valid token for `installation_id` (one mint for any number of concurrent callers)."""
        return await self._cache.get(installation_id)

    def invalidate(self, installation_id: int, token: Secret) -> None:
        """Drop `token` (GitHub said 401: expired or revoked) so the next call mints a new one."""
        self._cache.invalidate(installation_id, token)
