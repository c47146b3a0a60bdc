"""Which config keys hold secrets, and blanking them out before a config reaches a report, log or manifest.

Why by key and not by substring: a substring rule ("token" anywhere) also hides `eval.max_new_tokens` and
`pad_token`, which readers of a report need; a credential is named by the whole key or its last words
(`api_key`, `hf_token`, `db_password`, `client_secret`, `Authorization`). Keys are split into words at `_`,
`-`, `.`, spaces and camelCase boundaries, then matched against those words.

Why by value too: a credential also lands under keys nobody called secret (`--set train.report_to=sk-...`,
a `base_url` with `?token=...`). So every string is also scanned, whatever its key, for: URL userinfo
(`https://user:pass@host`), URL query parameters whose name is a secret key (`token`, `api_key`, `sig`, ...),
and the shapes of credentials (`sk-...`, `hf_...`, `ghp_...`, `AKIA...`, Slack `xox?-`, JSON web tokens,
`Bearer ...`); those parts are replaced by `***`, the rest of the string kept.
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

#: Query parameter names that carry a credential besides the secret keys (`sig`: signed URLs).
SECRET_QUERY_NAMES = frozenset({"sig", "signature", "key", "code", "jwt", "session", "sas"})
#: Shapes of credentials, found anywhere in a string (whole word-like runs only).
CREDENTIAL_PATTERNS = (
    re.compile(r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{8,}"),  # OpenAI / Anthropic style: sk-..., sk-proj-...
    re.compile(r"\b(?:hf|ghp|gho|ghu|ghs|ghr|glpat|xai|gsk|pplx)[_-][A-Za-z0-9_-]{16,}"),  # hub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JSON web tokens
    re.compile(r"(?i)(?<=\bbearer )[A-Za-z0-9._~+/=-]{8,}"),  # Authorization: Bearer <token>
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")

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


def _is_secret_query_name(name: str) -> bool:
    return is_secret_key(name) or name.lower() in SECRET_QUERY_NAMES


def _redact_url(url: str) -> str:
    """One URL with its userinfo and its secret query values replaced by `***`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url
    if parts.password is not None or parts.username is not None:
        host = f"{host}:{port}" if port is not None else host
        parts = parts._replace(netloc=f"{REDACTED}@{host}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_is_secret_query_name(k) and v for k, v in pairs):
            hidden = [(k, REDACTED if _is_secret_query_name(k) and v else v) for k, v in pairs]
            parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


def redact_text(text: str) -> str:
    """`text` with every credential-shaped part replaced by `***`: URL userinfo and secret query values,
    then API-key and token shapes (`CREDENTIAL_PATTERNS`), whatever key the text sits under."""
    if "://" in text:
        text = _URL.sub(lambda m: _redact_url(m.group(0)), text)
    for pattern in CREDENTIAL_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any) -> Any:
    """A copy of a config (dicts, lists, scalars) with secret values replaced by `***`: by key, and by
    value for every string (`redact_text`)."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
