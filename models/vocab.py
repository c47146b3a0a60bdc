"""The real LLaMA-2 / Vicuna and Qwen2 vocabularies, offline, for exact tokenisation tests.

No model download is allowed, but PyPI's source distribution of `llama-cpp-python` ships llama.cpp's test
vocabularies with reference tokenisations beside them. `fetch` extracts only two of them (the 76 MB archive
is deleted afterwards):

- `ggml-vocab-llama-spm.gguf`: the 32000 LLaMA pieces with scores and types (Vicuna v1.5's vocabulary).
  `tokenizer_model` rebuilds the exact SentencePiece `tokenizer.model` from the GGUF fields (BPE, byte
  fallback, identity normaliser, dummy prefix on, extra whitespace kept), which the `sentencepiece` package
  then tokenises exactly as LLaMA's own file does.
- `ggml-vocab-qwen2.gguf`: Qwen2's byte-level BPE (151643 pieces, their merges, `<|endoftext|>`,
  `<|im_start|>`, `<|im_end|>`), the vocabulary Qwen2.5-VL keeps. `qwen2_tokenizer_dir` builds a
  transformers `Qwen2Tokenizer` from it and appends Qwen2.5's added tokens (vision, box, tool and FIM
  markers) at the ids Qwen2.5-VL's own tokenizer gives them, so `<|image_pad|>` is 151655 as in the real
  model's config. Built once (the GGUF read and BPE build take tens of seconds), saved as `tokenizer.json`.

Files live under `$SEFE_VOCAB_DIR`, else `$SEFE_CACHE/vocab/` (default `~/.cache/sefe/vocab/`);
`make install` runs `python -m sefe.models.vocab fetch`, which is idempotent.

    python -m sefe.models.vocab fetch     # download + extract (once), build tokenizer.model
    python -m sefe.models.vocab path      # print the tokenizer.model path (exit 1 when absent)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from sefe.atomic import atomic_dir

SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
GGUF_NAME = "ggml-vocab-llama-spm.gguf"
QWEN2_GGUF_NAME = "ggml-vocab-qwen2.gguf"
# The files taken from the sdist: the vocabularies and their reference tokenisations.
MEMBER_SUFFIXES = tuple(name + ext for name in (GGUF_NAME, QWEN2_GGUF_NAME) for ext in ("", ".inp", ".out"))
MODEL_NAME = "tokenizer.model"
QWEN2_TOKENIZER_DIR = "qwen2-tokenizer"
#: Qwen2.5's added tokens after Qwen2's three, in id order from 151646 (`<|image_pad|>` = 151655); the last
#: eight are plain (not special) added tokens in Qwen2.5's tokenizer, as here.
QWEN25_ADDED_SPECIAL = (
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN25_ADDED_PLAIN = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
#: llama.cpp separates the cases of its .inp/.out files with this line.
CASE_SEPARATOR = "__ggml_vocab_test__"


def vocab_dir() -> Path:
    """`$SEFE_VOCAB_DIR`, else `$SEFE_CACHE/vocab` (default `~/.cache/sefe/vocab`): the fetched vocabulary."""
    if own := os.environ.get("SEFE_VOCAB_DIR"):
        return Path(own)
    env = os.environ.get("SEFE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "sefe") / "vocab"


def gguf_path(folder: Path | None = None) -> Path:
    return (folder or vocab_dir()) / GGUF_NAME


def model_path(folder: Path | None = None) -> Path:
    return (folder or vocab_dir()) / MODEL_NAME


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def extract_from_sdist(archive: Path, folder: Path) -> list[Path]:
    """Copy the vocabulary files (and nothing else) out of the sdist tarball into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or name not in MEMBER_SUFFIXES or "/models/" not in member.name:
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            _atomic_write(folder / name, src.read())
            out.append(folder / name)
    missing = [m for m in MEMBER_SUFFIXES if not (folder / m).is_file()]
    if missing:
        raise FileNotFoundError(f"{archive}: the sdist lacks {missing} (looked for */models/<name>)")
    return out


def download_sdist(dest: Path) -> Path:
    """`pip download` the llama-cpp-python sdist (no dependencies, no build) into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    cmd += ["-d", str(dest), f"{SDIST_PACKAGE}=={SDIST_VERSION}"]
    subprocess.run(cmd, check=True)
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz")) + sorted(dest.glob("llama-cpp-python-*.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download left no llama-cpp-python sdist in {dest}")
    return found[0]


def fetch(folder: Path | None = None, archive: Path | None = None) -> Path:
    """Make sure the GGUF files and the rebuilt `tokenizer.model` are in `folder`; return the model path.

    Idempotent: nothing is downloaded when the files are there. The downloaded archive is deleted.
    """
    folder = folder or vocab_dir()
    if not all((folder / m).is_file() for m in MEMBER_SUFFIXES):
        if archive is not None:
            extract_from_sdist(archive, folder)
        else:
            with tempfile.TemporaryDirectory(prefix="sefe-vocab-") as tmp:
                extract_from_sdist(download_sdist(Path(tmp)), folder)
    qwen2_tokenizer_dir(folder)
    return tokenizer_model(folder)


def sentencepiece_proto_from_gguf(path: Path) -> bytes:
    """A serialized SentencePiece ModelProto with the GGUF file's pieces, scores and piece types."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = GGUFReader(str(path))

    def field(name: str):
        f = reader.get_field(name)
        if f is None:
            raise ValueError(f"{path}: GGUF field {name!r} missing (not a llama.cpp vocabulary file?)")
        return f

    model = str(field("tokenizer.ggml.model").contents())
    if model != "llama":
        raise ValueError(f"{path}: tokenizer.ggml.model is {model!r}, expected 'llama' (SentencePiece)")
    tokens = field("tokenizer.ggml.tokens").contents()
    scores = field("tokenizer.ggml.scores").contents()
    types = field("tokenizer.ggml.token_type").contents()
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(f"{path}: tokens/scores/token_type lengths differ")

    def special(name: str, default: int) -> int:
        f = reader.get_field(name)
        return int(f.contents()) if f is not None else default

    proto = pb.ModelProto()
    for piece, score, kind in zip(tokens, scores, types, strict=True):
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = float(score)
        entry.type = int(kind)  # GGUF token types use SentencePiece's numbering (1 normal ... 6 byte)
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.unk_id = special("tokenizer.ggml.unknown_token_id", 0)
    spec.bos_id = special("tokenizer.ggml.bos_token_id", 1)
    spec.eos_id = special("tokenizer.ggml.eos_token_id", 2)
    spec.pad_id = -1
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    norm.precompiled_charsmap = b""
    return proto.SerializeToString()


def tokenizer_model(folder: Path | None = None) -> Path:
    """`folder/tokenizer.model` rebuilt from the GGUF vocabulary (built once, then reused)."""
    folder = folder or vocab_dir()
    out = model_path(folder)
    src = gguf_path(folder)
    if not src.is_file():
        raise FileNotFoundError(f"{src} missing: run `python -m sefe.models.vocab fetch` (make install)")
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        _atomic_write(out, sentencepiece_proto_from_gguf(src))
    return out


def reference_cases(folder: Path | None = None, name: str = GGUF_NAME) -> list[tuple[str, list[int]]]:
    """llama.cpp's (text, token ids without BOS) reference tokenisations of the vocabulary `name`."""
    src = (folder or vocab_dir()) / name
    inp = src.with_name(src.name + ".inp").read_text(encoding="utf-8")
    out = src.with_name(src.name + ".out").read_text(encoding="utf-8")
    texts = inp.split(f"\n{CASE_SEPARATOR}\n")
    if texts and texts[-1] == "":
        texts.pop()
    lines = out.removesuffix("\n").split("\n")  # one line of ids per case (an empty line for "")
    if len(lines) != len(texts):
        raise ValueError(f"{src}: {len(texts)} reference inputs but {len(lines)} output lines")
    return [(text, [int(t) for t in ids.split()]) for text, ids in zip(texts, lines, strict=True)]


def llama_tokenizer(legacy: bool, folder: Path | None = None):
    """A transformers LlamaTokenizer built from the rebuilt `tokenizer.model` with the given `legacy` flag."""
    from transformers import LlamaTokenizer

    model = tokenizer_model(folder)
    tok = LlamaTokenizer.from_pretrained(str(model.parent), legacy=legacy)
    tok.pad_token = tok.unk_token
    return tok


def qwen2_tokenizer_dir(folder: Path | None = None) -> Path:
    """`folder/qwen2-tokenizer/`: the Qwen2.5 tokenizer built from the Qwen2 GGUF (once, then reused)."""
    folder = folder or vocab_dir()
    out = folder / QWEN2_TOKENIZER_DIR
    src = folder / QWEN2_GGUF_NAME
    if not src.is_file():
        raise FileNotFoundError(f"{src} missing: run `python -m sefe.models.vocab fetch` (make install)")
    if (out / "tokenizer.json").is_file() and (out / "tokenizer.json").stat().st_mtime >= src.stat().st_mtime:
        return out
    tokenizer = qwen2_tokenizer_from_gguf(src)
    with atomic_dir(out, replace=True) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return out


def qwen2_tokenizer_from_gguf(path: Path):
    """A transformers `Qwen2Tokenizer`: the GGUF's normal pieces and merges, then Qwen2's three control
    tokens and Qwen2.5's added tokens in id order (llama.cpp fills ids 151646.. with `[PAD…]` names)."""
    from gguf import GGUFReader
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    reader = GGUFReader(str(path))

    def field(name: str):
        f = reader.get_field(name)
        if f is None:
            raise ValueError(f"{path}: GGUF field {name!r} missing (not a llama.cpp vocabulary file?)")
        return f.contents()

    if field("tokenizer.ggml.model") != "gpt2" or field("tokenizer.ggml.pre") != "qwen2":
        raise ValueError(f"{path}: not a Qwen2 byte-level BPE vocabulary (tokenizer.ggml.model/pre)")
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    normal = [t for t, kind in zip(tokens, types, strict=True) if kind == 1]  # 1: a normal piece
    control = [
        t for t, kind in zip(tokens, types, strict=True) if kind == 3
    ]  # 3: <|endoftext|> and the im pair
    if tokens[: len(normal)] != normal or control != ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        raise ValueError(
            f"{path}: unexpected layout (normal pieces first, then Qwen2's three control tokens)"
        )
    merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
    tok = Qwen2Tokenizer(vocab={t: i for i, t in enumerate(normal)}, merges=merges)
    special = [AddedToken(t, special=True, normalized=False) for t in (*control[1:], *QWEN25_ADDED_SPECIAL)]
    tok.add_special_tokens({"additional_special_tokens": special}, replace_extra_special_tokens=False)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN25_ADDED_PLAIN])
    expected = len(normal) + 3 + len(QWEN25_ADDED_SPECIAL) + len(QWEN25_ADDED_PLAIN)
    if len(tok) != expected or tok.convert_tokens_to_ids("<|image_pad|>") != len(normal) + 12:
        raise ValueError(f"{path}: the added tokens did not land on Qwen2.5's ids ({len(tok)} != {expected})")
    return tok


def qwen2_tokenizer(folder: Path | None = None):
    """The Qwen2.5 tokenizer (a transformers `Qwen2Tokenizer`) from the fetched Qwen2 vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen2_tokenizer_dir(folder)))


def main(argv: list[str]) -> int:
    if argv[:1] == ["fetch"]:
        print(fetch())
        return 0
    if argv[:1] == ["path"]:
        path = model_path()
        print(path)
        return 0 if path.is_file() else 1
    print("usage: python -m sefe.models.vocab {fetch|path}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
