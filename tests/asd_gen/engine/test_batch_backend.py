"""Batch API round trip: request files out (split by lines and bytes), provider output in by custom_id."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.asd_gen.backends.batch_backend import BatchBackend, BatchFileError
from sefe.asd_gen.engine import QUARANTINE_NAME, Engine
from sefe.asd_gen.needs import GenerationOptions
from tests.helpers.chat_server import ChatServer
from tests.helpers.engine import need
from tests.helpers.provider import answer_batch_files


def _engine(tmp_path: Path, out: Path, **kw: object) -> Engine:
    opts = GenerationOptions(backend="batch", model="gpt-4o-mini", max_retries=1, **kw)  # type: ignore[arg-type]
    backend = BatchBackend(opts, out_dir=out)
    backend.max_lines = 4  # small files, to exercise the split
    return Engine(opts, tmp_path, show_progress=False, backend=backend)


def test_round_trip_split_pending_and_ingest(tmp_path: Path, server: ChatServer) -> None:
    out = tmp_path / "o"
    needs = [need(f"b{i}", "mcq" if i % 2 else "brief", 1 + i % 3) for i in range(10)]
    first = _engine(tmp_path, out).fulfil(needs, str(out))
    files = sorted((out / "batch").glob("input_*.jsonl"))
    assert [len(f.read_bytes().splitlines()) for f in files] == [4, 4, 2]
    assert first.report.pending_batch_files == [str(f) for f in files]
    assert not first.results and not first.failures and len(first.open) == 10
    assert all(f.error.startswith("pending:") for f in first.open)
    assert not (out / QUARANTINE_NAME).exists()
    line = orjson.loads(files[0].read_bytes().splitlines()[0])
    assert set(line) == {"custom_id", "method", "url", "body"} and line["url"] == "/v1/chat/completions"
    rf = line["body"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert line["body"]["model"] == "gpt-4o-mini"

    again = _engine(tmp_path, out).fulfil(needs, str(out))  # no output yet: nothing new is written
    assert sorted((out / "batch").glob("input_*.jsonl")) == files and again.report.pending_batch_files

    answer_batch_files(files, server.base_url, out / "batch" / "output" / "batch_out.jsonl")
    assert server.count() == 10
    done = _engine(tmp_path, out).fulfil(needs, str(out))
    assert len(done.results) == 10 and not done.failures and not done.report.pending_batch_files
    assert done.report.tokens_in > 0
    final = _engine(tmp_path, out).fulfil(needs, str(out))  # everything cached now
    assert final.report.cached == 10 and final.report.requests_sent == 0


def test_provider_errors_are_quarantined_and_invalid_output_is_asked_again(tmp_path: Path, server) -> None:
    out = tmp_path / "o"
    good, bad, invalid = need("g"), need("e"), need("i", tag="[[fault:invalid:1]]")
    _engine(tmp_path, out).fulfil([good, bad, invalid], str(out))
    files = sorted((out / "batch").glob("input_*.jsonl"))
    answer_batch_files(files, server.base_url, out / "batch" / "output" / "a.jsonl")
    rows = [orjson.loads(x) for x in (out / "batch" / "output" / "a.jsonl").read_bytes().splitlines()]
    # the provider fails the Need "e" (its custom_id is found through the input file)
    inputs = [orjson.loads(x) for f in files for x in f.read_bytes().splitlines()]
    key_bad = next(r["custom_id"] for r in inputs if "record e?" in orjson.dumps(r["body"]).decode())
    for r in rows:
        if r["custom_id"] == key_bad:
            r["response"] = {
                "status_code": 400,
                "request_id": "x",
                "body": {"error": {"message": "bad image"}},
            }
    (out / "batch" / "output" / "a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    res = _engine(tmp_path, out).fulfil([good, bad, invalid], str(out))
    assert good.key in res.results
    by_id = {f.record_id: f for f in res.failures}
    assert "batch HTTP 400: bad image" in by_id["e"].error
    assert [f.record_id for f in res.open] == ["i"]  # its retry went into a new request file: open
    assert res.open[0].error.startswith("pending:") and set(by_id) == {"e"}
    assert [r["record_id"] for r in map(orjson.loads, (out / QUARANTINE_NAME).read_bytes().splitlines())] == [
        "e"
    ]
    retry_file = sorted((out / "batch").glob("input_*.jsonl"))[-1]
    assert orjson.loads(retry_file.read_bytes().splitlines()[0])["custom_id"].endswith("~2")


def test_byte_limit_splits_files_and_bad_output_names_file_and_line(tmp_path: Path) -> None:
    out = tmp_path / "o"
    eng = _engine(tmp_path, out)
    eng._backend.max_lines = 1000  # type: ignore[union-attr]
    eng._backend.max_bytes = 2500  # type: ignore[union-attr]
    eng.fulfil([need(f"s{i}") for i in range(6)], str(out))
    files = sorted((out / "batch").glob("input_*.jsonl"))
    assert len(files) > 1 and all(f.stat().st_size <= 2500 for f in files)
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 6
    bad = out / "batch" / "output" / "broken.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"custom_id": "x", "response": {"status_code": 200, "body": {}}}\n{"oops": 1}\n')
    with pytest.raises(BatchFileError, match=r"broken\.jsonl: line 2"):
        _engine(tmp_path, out).fulfil([need("s0")], str(out))


def test_batch_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model"):
        BatchBackend(GenerationOptions(backend="batch"), out_dir=tmp_path)
