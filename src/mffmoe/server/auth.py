"""API-key check: header `X-API-Key`, compared in constant time; open when no key is configured."""
from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from mffmoe.server.errors import ApiError

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="Required when the server was started with $MFFMOE_API_KEY set.")


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the raw header bytes (ASGI servers decode headers as latin-1)
    with the key's UTF-8 bytes, so a non-ASCII key works when the client sends it as UTF-8."""
    if given is None:
        return False
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), raw)


async def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    expected = request.app.state.settings.api_key
    if expected and not key_matches(expected, key):
        raise ApiError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header",
                       headers={"WWW-Authenticate": API_KEY_HEADER})
