"""Secrets are redacted by key, not by substring: `max_new_tokens` stays readable, `api_key` does not."""

from __future__ import annotations

import pytest

from sefe.redact import REDACTED, is_secret_key, redact


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "OPENAI_API_KEY",
        "openaiApiKey",
        "apikey",
        "password",
        "db_password",
        "client_secret",
        "secret",
        "token",
        "hf_token",
        "access_token",
        "auth_token",
        "Authorization",
        "credentials",
        "aws-access-key",
        "private_key",
    ],
)
def test_credential_keys_are_secret(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_new_tokens",
        "max_tokens",
        "tokens_in",
        "pad_token",
        "eos_token",
        "image_token",
        "image_token_index",
        "max_token",
        "tokenizer",
        "key",
        "cache_key",
        "author",
        "lr",
        "batch_size",
    ],
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_a_run_config_keeps_settings_and_hides_credentials() -> None:
    cfg = {
        "eval": {"max_new_tokens": 128, "batch_size": 16},
        "judge": {
            "api_key": "sk-live-123",
            "base_url": "https://user:hunter2@example.org:8443/v1",
            "token": "",
        },
        "servers": [{"password": "pw"}, {"name": "a"}],
    }
    out = redact(cfg)
    assert out["eval"] == {"max_new_tokens": 128, "batch_size": 16}
    assert out["judge"]["api_key"] == REDACTED
    assert out["judge"]["base_url"] == f"https://{REDACTED}@example.org:8443/v1"
    assert out["judge"]["token"] == ""  # nothing to hide
    assert out["servers"] == [{"password": REDACTED}, {"name": "a"}]
    assert "sk-live-123" not in repr(out) and "hunter2" not in repr(out)
    assert cfg["judge"]["api_key"] == "sk-live-123"  # a copy: the input is untouched
