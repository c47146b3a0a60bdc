"""Which config keys hold secrets, and blanking them out before a config reaches a report, log or manifest.

Why by key and not by substring: a substring rule ("token" anywhere) also hides `eval.max_new_tokens` and
`pad_token`, which readers of a report need; a credential is named by the whole key or its last words
(`api_key`, `hf_token`, `db_password`, `client_secret`, `Authorization`). Keys are split into words at `_`,
`-`, `.`, spaces and camelCase boundaries, then matched against those words. Credentials inside URLs
(`https://user:pass@host`) are blanked too.
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

#: A key holding any of these words is a secret.
SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "pwd", "secret", "secrets", "credential", "credentials", "apikey"}
)
#: A key ending in one of these words is a secret (`auth`, `token`: only as the last word).
SECRET_LAST_WORDS = frozenset({"token", "auth", "authorization", "cookie", "bearer"})
#: ... unless the word before says it is a vocabulary token or a count (`pad_token`, `max_token`).
NOT_CREDENTIAL_TOKEN = frozenset(
    {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "image", "video", "audio", "special", "start", "end"}
    | {"stop", "max", "min", "num", "new", "total", "per"}
)
#: Two-word names of secrets (`api_key`, `access_key`, `private_key`, `secret_key`, `session_key`).
SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("session", "key")})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def key_words(key: str) -> list[str]:
    """`maxNewTokens` -> [max, new, tokens]; `OPENAI_API_KEY` -> [openai, api, key]."""
    return [w.lower() for w in _SPLIT.split(_CAMEL.sub("_", key)) if w]


def is_secret_key(key: object) -> bool:
    """True when a config key names a credential (see the module docstring for the rule)."""
    words = key_words(str(key))
    if not words:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    if any(pair in SECRET_PAIRS for pair in itertools.pairwise(words)):
        return True
    if words[-1] in SECRET_LAST_WORDS:
        return len(words) == 1 or words[-2] not in NOT_CREDENTIAL_TOKEN
    return False


def _strip_url_credentials(value: str) -> str:
    if "@" not in value or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None and parts.username is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def redact(value: Any) -> Any:
    """A copy of a config (dicts, lists, scalars) with secret values replaced by `***`."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _strip_url_credentials(value)
    return value
