"""``diancang pretrain``: continued MLM training of an encoder, resumable, written as a plain
Hugging Face encoder directory (``model.encoder: <output_dir>``).

The texts are encoded once; each update draws its batch from a seeded permutation of the epoch
and masks it with a generator seeded by the update number, so a resumed run (from the
checkpoint written every ``save_every`` updates: weights, head, optimizer moments and averages
as safetensors, progress as JSON) trains exactly as an uninterrupted one. Learning rates are a
function of the update number: the encoder's is 0 for ``head_warmup`` updates, then both warm up
and decay linearly. With ``trim_vocab`` only the rows the texts use are trained (the softmax runs
over them); the written encoder puts them back into the full vocabulary.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diancang.errors import ConfigError
from diancang.learn.optim import linear_warmup
from diancang.learn.resume import load_optimizer_state, optimizer_state
from diancang.model.encoder import (
    load_pretrained_encoder,
    strip_pooler,
    trim_embeddings,
    truncate_layers,
)
from diancang.model.features import TokenEncoder
from diancang.pretrain.config import PretrainConfig
from diancang.pretrain.corpus import read_texts
from diancang.pretrain.mlm import MLMHead, mask_id, masked_batch, mlm_loss, prepare

logger = logging.getLogger("diancang.pretrain")

HEAD_INIT = (
    "dense = identity, LayerNorm (1, 0), bias 0; decoder tied to the input embeddings; "
    "trained alone for head_warmup updates"
)


def _kept_ids(cfg: PretrainConfig, probe: TokenEncoder, texts: list[Any]) -> list[int]:
    """Rows to train: the specials, the mask piece and what the texts use (``max_vocab``: the
    most frequent of them)."""
    counts: dict[int, int] = {}
    for t in texts:
        for tok in t.tokens:
            for i in probe.pieces(tok):
                counts[i] = counts.get(i, 0) + 1
    always = set(probe.special_ids())
    if probe.tokenizer.mask_token_id is not None:
        always.add(int(probe.tokenizer.mask_token_id))
    ranked = sorted(counts, key=lambda i: -counts[i])
    if cfg.max_vocab is not None:
        ranked = ranked[: max(0, cfg.max_vocab - len(always))]
    return sorted(always | set(ranked))


def _evaluate(
    encoder: Any,
    head: MLMHead,
    items: list[Any],
    cfg: PretrainConfig,
    tok: TokenEncoder,
    vocab: int,
) -> float | None:
    """Mean MLM loss on the held-out texts (fixed masks)."""
    if not items:
        return None
    encoder.eval()
    rng, losses = random.Random(cfg.seed), []
    with torch.no_grad():
        for lo in range(0, len(items), cfg.batch_size):
            batch = masked_batch(items[lo : lo + cfg.batch_size], cfg.masking, tok, vocab, rng)
            losses.append(mlm_loss(encoder, head, batch)[0].item())
    encoder.train()
    return sum(losses) / len(losses)


def pretrain(cfg: PretrainConfig, restart: bool = False) -> Path:
    """Train and write the encoder to ``cfg.output_dir``; returns that directory."""
    from tqdm.auto import tqdm

    out, began = cfg.output_dir, time.perf_counter()
    ckpt = out / "checkpoint"
    identity = cfg.model_dump(mode="json", exclude={"progress", "save_every"})
    if restart and ckpt.exists():
        shutil.rmtree(ckpt)
    encoder, tokenizer = load_pretrained_encoder(cfg.encoder)
    strip_pooler(encoder)
    if cfg.keep_layers is not None:
        truncate_layers(encoder, cfg.keep_layers)
    texts = read_texts(cfg.texts, cfg.lang, cfg.latin_words)
    if len(texts) <= cfg.heldout:
        raise ConfigError(
            f"{len(texts)} texts read, but heldout={cfg.heldout} of them are held out",
            fix="give more text, or set heldout lower",
        )
    random.Random(cfg.seed).shuffle(texts)
    held, texts = texts[: cfg.heldout], texts[cfg.heldout :]
    probe = TokenEncoder(tokenizer, lang=cfg.lang, max_length=cfg.max_length)
    full = encoder.get_input_embeddings().weight.detach().clone()
    kept = _kept_ids(cfg, probe, texts) if cfg.trim_vocab else None
    if kept is not None:
        trim_embeddings(encoder, kept)
    tok = TokenEncoder(tokenizer, lang=cfg.lang, max_length=cfg.max_length, kept_ids=kept)
    items, held_items = prepare(texts, tok, cfg.masking), prepare(held, tok, cfg.masking)
    vocab = int(encoder.get_input_embeddings().weight.shape[0])
    hidden = int(encoder.config.hidden_size)
    head = MLMHead(hidden, vocab, float(getattr(encoder.config, "layer_norm_eps", 1e-12)))
    opt = torch.optim.AdamW(
        [
            {"params": list(encoder.parameters()), "lr": cfg.lr},
            {"params": list(head.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    per_epoch = math.ceil(len(items) / cfg.batch_size)
    total = min(cfg.max_updates or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
    # the encoder's rate is 0 while the fresh head trains alone, then warms up like the head's
    delay = min(cfg.head_warmup, total - 1)
    rates = (linear_warmup(total, cfg.warmup, delay), linear_warmup(total, cfg.warmup))
    params = {f"encoder.{k}": v for k, v in encoder.named_parameters()}
    params |= {f"head.{k}": v for k, v in head.named_parameters()}
    named = {"encoder": encoder, "head": head}  # the optimizer state's parameter owners
    average: dict[str, torch.Tensor] = {}
    averaged = 0
    start, losses = 0, []
    if (ckpt / "progress.json").is_file():
        saved = json.loads((ckpt / "progress.json").read_text("utf-8"))
        if saved["config"] != identity:
            raise ConfigError(
                "this output folder holds a checkpoint of a different pretraining config",
                path=ckpt,
                fix="add --restart to start over, or give another output_dir",
            )
        weights = load_file(str(ckpt / "weights.safetensors"))
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(weights[k])
        optimizer = load_file(str(ckpt / "optimizer.safetensors"))
        load_optimizer_state(opt, named, optimizer, saved["optimizer"])
        if (ckpt / "average.safetensors").is_file():
            average = load_file(str(ckpt / "average.safetensors"))
        start, losses, averaged = saved["update"], saved["losses"], saved["averaged"]
        before = saved["before"]
        logger.info("pretrain: resumed at update %d of %d", start, total)
    if start == 0:
        before = _evaluate(encoder, head, held_items, cfg, tok, vocab)
    bar = tqdm(total=total, initial=start, desc="pretrain", disable=None if cfg.progress else True)
    encoder.train()
    window: list[float] = []
    order: list[int] = []
    shuffled = -1  # the epoch ``order`` was drawn for
    for update in range(start, total):
        epoch, pos = divmod(update, per_epoch)
        if epoch != shuffled:  # one seeded permutation per epoch (a resume draws the same)
            order = list(range(len(items)))
            random.Random(cfg.seed * 7919 + epoch).shuffle(order)
            shuffled = epoch
        picked = [items[i] for i in order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]]
        rng = random.Random(cfg.seed * 1_000_003 + update)
        with torch.random.fork_rng(devices=[]):  # dropout seeded by the update: resumable
            torch.manual_seed(cfg.seed * 1_000_003 + update)
            loss, _ = mlm_loss(encoder, head, masked_batch(picked, cfg.masking, tok, vocab, rng))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        for group, base, rate in zip(opt.param_groups, (cfg.lr, cfg.head_lr), rates, strict=True):
            group["lr"] = base * rate(update)
        opt.step()
        opt.zero_grad()
        if cfg.average == "ema" and update >= cfg.head_warmup:
            d = cfg.ema_decay
            for name, v in params.items():
                old = average.get(name)
                average[name] = (
                    v.detach().clone() if old is None else d * old + (1 - d) * v.detach()
                )
        elif cfg.average == "swa" and update >= cfg.swa_start * total:
            for name, v in params.items():
                old = average.get(name)
                new = v.detach().clone()
                average[name] = new if old is None else (old * averaged + new) / (averaged + 1)
            averaged += 1
        window.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]:.3f}")
        if (update + 1) % cfg.save_every == 0 or update + 1 == total:
            losses.append([update + 1, sum(window) / len(window)])
            window = []
            ckpt.mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.detach().contiguous() for k, v in params.items()},
                str(ckpt / "weights.safetensors"),
            )
            tensors, optimizer_plain = optimizer_state(opt, named)
            save_file(tensors, str(ckpt / "optimizer.safetensors"))
            if average:
                save_file(
                    {k: v.contiguous() for k, v in average.items()},
                    str(ckpt / "average.safetensors"),
                )
            progress = {
                "config": identity,
                "update": update + 1,
                "losses": losses,
                "optimizer": optimizer_plain,
                "averaged": averaged,
                "before": before,
            }
            (ckpt / "progress.json").write_text(json.dumps(progress), "utf-8")
    bar.close()
    if average:
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(average[k])
    after = _evaluate(encoder, head, held_items, cfg, tok, vocab)
    if kept is not None:  # the trained rows back into the full vocabulary
        emb = encoder.get_input_embeddings()
        full[torch.tensor(kept)] = emb.weight.detach()
        new = torch.nn.Embedding(full.shape[0], full.shape[1], padding_idx=emb.padding_idx)
        new.weight.data.copy_(full)
        encoder.set_input_embeddings(new)
        encoder.config.vocab_size = full.shape[0]
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    head_rows = {"bias_rows": torch.tensor(kept if kept is not None else range(vocab))}
    save_file(
        {**{k: v.detach().contiguous() for k, v in head.state_dict().items()}, **head_rows},
        str(out / "mlm_head.safetensors"),
    )
    report = {
        "config": cfg.model_dump(mode="json"),
        "texts": len(texts),
        "heldout_texts": len(held),
        "pieces": sum(len(e.input_ids) - 2 for e, _, _ in items),
        "rows_trained": vocab,
        "unknown_pieces": sum(tok.unknown.values()),
        "unknown_top": tok.unknown.most_common(10),
        "mask_row": "[MASK]" if mask_id(tok) != tok.unk_id else "[UNK] (no mask piece)",
        "updates": total,
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        "losses": losses,
        "seconds": round(time.perf_counter() - began, 1),
        "head_init": HEAD_INIT,
    }
    (out / "pretrain.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), "utf-8")
    if tok.unknown:
        logger.warning(
            "pretrain: %d pieces outside the kept rows read as [UNK]", sum(tok.unknown.values())
        )
    shutil.rmtree(ckpt, ignore_errors=True)
    logger.info(
        "pretrain: %d updates, held-out MLM loss %s -> %s; encoder in %s", total, before, after, out
    )
    return out
