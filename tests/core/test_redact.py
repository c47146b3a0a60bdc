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


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("sk-live-abcdef1234567890", "abcdef1234567890"),
        ("sk-proj-AbC123dEf456GhI789", "AbC123dEf456GhI789"),
        ("wandb,sk-ant-api03-Zz9Yy8Xx7Ww6", "Zz9Yy8Xx7Ww6"),
        ("hf_AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
        ("ghp_0123456789abcdefABCDEF0123", "0123456789abcdefABCDEF0123"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("Bearer abc.def-ghi_jkl012", "abc.def-ghi_jkl012"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "eyJzdWIiOiIxMjM0In0"),
        ("https://host/x?token=t0psecret&page=2", "t0psecret"),
        ("https://host/v1?api_key=k3y&sig=s1gned", "k3y"),
        ("https://host/v1?api_key=k3y&sig=s1gned", "s1gned"),
        ("see https://me:hunter2@host/x for logs", "hunter2"),
    ],
)
def test_credentials_are_redacted_by_value_whatever_their_key(value: str, secret: str) -> None:
    out = redact({"train": {"report_to": value}, "notes": [value]})
    assert secret not in repr(out)
    assert REDACTED in out["train"]["report_to"] and REDACTED in out["notes"][0]


@pytest.mark.parametrize(
    "value",
    [
        "wandb",
        "https://host/x?page=2&max_tokens=128",
        "sk-short",
        "task-ScienceQA_x20",
        "llava-hf/llava-1.5-7b-hf",
        "/data/hf_cache/models",
    ],
)
def test_ordinary_values_stay_readable(value: str) -> None:
    assert redact({"a": value}) == {"a": value}


def test_a_url_keeps_everything_but_its_secrets() -> None:
    assert (
        redact("https://u:p@host:8443/x?token=t0p&page=2")
        == f"https://{REDACTED}@host:8443/x?token=***&page=2"
    )
