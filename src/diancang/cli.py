"""The ``diancang`` command line: run, eval, predict, data stats, strategies."""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from diancang.errors import DiancangError

app = typer.Typer(
    help="diancang (智慧典藏): continual named entity recognition.",
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a :class:`DiancangError` into one paragraph on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DiancangError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
@user_errors
def run(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML config (default: the embedded demo, compared with finetune)."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted overrides, e.g. train.epochs=2.")
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Also run these strategies on the same stream (comma list; a+b composes) and "
            "print the step x type tables side by side. Default with no config: finetune."
        ),
    ] = None,
    restart: Annotated[bool, typer.Option(help="Ignore checkpoints and start over.")] = False,
    quiet: Annotated[bool, typer.Option(help="Less logging.")] = False,
) -> None:
    """Run a class-incremental job: train every step, evaluate, write results and the model."""
    from diancang.config import load_config
    from diancang.evaluation.report import render_side_by_side
    from diancang.pipeline import compare as compare_runs
    from diancang.pipeline import run as run_job

    _logging(not quiet)
    extra = list(overrides or [])
    if (
        config is not None
        and "=" in str(config)
        and "/" not in str(config).split("=")[0]
        and not config.exists()
    ):
        config, extra = None, [str(config), *extra]  # `diancang run output_dir=runs/x`
    if config is None:
        config = Path(str(files("diancang") / "resources" / "demo.yaml"))
        compare = "finetune" if compare is None else compare
    cfg = load_config(config, extra)
    command = "diancang " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if compare:
        arms = [item.split("+") for item in compare.split(",") if item]
        results = compare_runs(cfg, arms, restart=restart, command=command)
        typer.echo(
            f"\n{cfg.name}: F1 (%) of each type after each step, "
            f"{' / '.join(results)} in each cell\n"
        )
        typer.echo(render_side_by_side({k: r.matrix for k, r in results.items()}))
        for name, r in results.items():
            typer.echo(f"{name}: results, model and config in {r.output_dir}")
        return
    result = run_job(cfg, restart=restart, command=command)
    if "markdown" in result.files:
        typer.echo(result.files["markdown"].read_text("utf-8"))
    typer.echo(f"results, model and config: {result.output_dir}")


@app.command("eval")
@user_errors
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="A saved model folder.")],
    data: Annotated[str, typer.Option(help="Dataset preset name or a data file.")],
    split: Annotated[str, typer.Option(help="train, dev or test (presets).")] = "test",
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the preset's files.")] = None,
    format: Annotated[str, typer.Option(help="File format for a data file.")] = "conll",
) -> None:
    """Score a saved model on a dataset split (strict entity F1 over the model's types), as JSON."""
    from diancang.data.presets import load_files, load_preset
    from diancang.learn.evaluate import evaluate
    from diancang.model.tagger import Tagger
    from diancang.pipeline import as_model_reads

    tagger = Tagger.from_pretrained(model)
    if Path(data).is_file():
        splits = load_files(None, None, Path(data), format=format, lang=tagger.spec.lang)
        split = "test"
    else:
        splits = load_preset(data, data_dir)
        if split not in ("train", "dev", "test"):
            raise DiancangError(f"unknown split {split!r}", fix="use train, dev or test")
    splits = as_model_reads(splits, tagger.spec.latin_words)  # tokens as the model reads text
    sentences = getattr(splits, split)
    scores = evaluate(tagger, sentences, tagger.types)
    typer.echo(json.dumps(scores.to_dict(), ensure_ascii=False, indent=2))


@app.command()
@user_errors
def predict(
    model: Annotated[
        Path, typer.Argument(help="A saved model folder, or an archive (its live version).")
    ],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to tag.")] = None,
    file: Annotated[Path | None, typer.Option(help="A file with one text per line.")] = None,
    version: Annotated[
        int | None, typer.Option(help="With an archive: this version instead of the live one.")
    ] = None,
    types: Annotated[
        str | None,
        typer.Option(
            help="Only these types (comma list): task-incremental prediction, where the "
            "caller knows which types a text may hold."
        ),
    ] = None,
) -> None:
    """Print the entities of each text as JSON (one object per line)."""
    from diancang.model.tagger import Tagger
    from diancang.predict import recognize

    if (model / "archive.sqlite3").is_file():
        from diancang.archive import Archive

        store = Archive(model)
        model = store.model_dir(store.pick(version).id)
    elif version is not None:
        raise DiancangError("--version needs an archive", path=model, fix="drop --version")
    items = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise DiancangError("file not found", path=file, fix="give an existing text file")
        items += [ln for ln in file.read_text("utf-8").splitlines() if ln.strip()]
    if not items:
        raise DiancangError("no text given", fix="pass texts as arguments or --file")
    tagger = Tagger.from_pretrained(model)
    only = [t.strip() for t in types.split(",") if t.strip()] if types else None
    for res in recognize(tagger, items, types=None if only is None else [only] * len(items)):
        typer.echo(json.dumps(res, ensure_ascii=False))


@app.command("export")
@user_errors
def export_cmd(
    model: Annotated[Path, typer.Argument(help="A saved model folder.")],
    int8: Annotated[bool, typer.Option(help="Also quantise the weights to int8.")] = False,
) -> None:
    """Write the model's forward pass as ONNX (model.onnx, with --int8 model.int8.onnx) into
    its folder, for ONNX Runtime (the service does this itself; see `serve --backend`)."""
    from diancang.model import onnx_backend
    from diancang.model.tagger import Tagger

    tagger = Tagger.from_pretrained(model)
    if not onnx_backend.exportable(tagger):
        raise DiancangError(
            f"a model with {onnx_backend.why_not(tagger)} does not export",
            fix="serve it with the torch backend",
        )
    path = onnx_backend.export(tagger, model / "model.onnx", int8=int8)
    typer.echo(f"wrote {path}")


@app.command("pretrain")
@user_errors
def pretrain_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config (PretrainConfig).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted overrides, e.g. max_updates=500 masking.mode=entity."),
    ] = None,
    restart: Annotated[bool, typer.Option(help="Ignore a checkpoint and start over.")] = False,
    quiet: Annotated[bool, typer.Option(help="Less logging.")] = False,
) -> None:
    """Continue masked-language-model training of an encoder on raw text (lines, JSON lines,
    NER files); writes an encoder folder to use as model.encoder. Resumes from its checkpoint."""
    from diancang.config import load_as
    from diancang.pretrain.config import PretrainConfig
    from diancang.pretrain.trainer import pretrain

    _logging(not quiet)
    extra = list(overrides or [])
    if config is not None and "=" in str(config) and not config.exists():
        config, extra = None, [str(config), *extra]  # `diancang pretrain texts=[...] ...`
    cfg = load_as(PretrainConfig, config, extra)
    out = pretrain(cfg, restart=restart)
    report = json.loads((out / "pretrain.json").read_text("utf-8"))
    typer.echo(
        f"{report['updates']} updates on {report['texts']} texts in {report['seconds']} s; "
        f"held-out MLM loss {report['heldout_loss_before']} -> {report['heldout_loss_after']}; "
        f"encoder: {out} (use model.encoder={out})"
    )


@data_app.command("stats")
@user_errors
def data_stats(
    path: Annotated[
        str,
        typer.Argument(
            help="A preset name or folder, a folder of train/dev/test files, or a data file."
        ),
    ],
    dev: Annotated[Path | None, typer.Option(help="A dev file to go with a data file.")] = None,
    test: Annotated[Path | None, typer.Option(help="A test file to go with a data file.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of Markdown.")
    ] = False,
    strict: Annotated[bool, typer.Option(help="Fail on the first defect.")] = False,
    format: Annotated[str, typer.Option(help="File format: conll, cluener or jsonl.")] = "conll",
    scheme: Annotated[
        str, typer.Option(help="Tag scheme of column files: auto, bio, iob1, bioes or bmes.")
    ] = "auto",
    lang: Annotated[
        str | None, typer.Option(help="zh or en (default: guessed from the text).")
    ] = None,
    max_length: Annotated[
        int,
        typer.Option(help="Count the sentences longer than this many sub-tokens (windows)."),
    ] = 128,
    encoder: Annotated[
        str | None,
        typer.Option(help="Count sub-tokens with this encoder's tokenizer (default: tokens)."),
    ] = None,
) -> None:
    """Counts (sentences, mentions, types), long sentences and every data defect, per split."""
    from diancang.data.stats import (
        dataset_stats,
        load_for_stats,
        long_sentences,
        render_stats_markdown,
    )

    splits = load_for_stats(
        path, dev=dev, test=test, format=format, scheme=scheme, lang=lang, strict=strict
    )
    stats = dataset_stats(splits)
    count, unit = (lambda _: 1), "tokens" + (" = characters" if splits.lang == "zh" else "")
    if encoder is not None:
        from diancang.model.encoder import load_pretrained_encoder
        from diancang.model.features import TokenEncoder

        probe = TokenEncoder(
            load_pretrained_encoder(encoder)[1], lang=splits.lang, max_length=max_length
        )
        count, unit = (lambda t: len(probe.pieces(t))), f"sub-tokens of {encoder}"
    stats["long_sentences"] = {
        "max_length": max_length,
        "counted_in": unit,
        "splits": long_sentences(splits, max_length, count),
    }
    typer.echo(
        json.dumps(stats, ensure_ascii=False, indent=2) if as_json else render_stats_markdown(stats)
    )


@app.command("strategies")
def list_strategies() -> None:
    """List the registered strategies."""
    from diancang.strategies.base import strategies

    for name in strategies.names():
        entry = strategies.entry(name)
        paragraph = (entry.factory.__doc__ or "").strip().split("\n\n")[0]
        typer.echo(f"{name} (v{entry.version}): {' '.join(paragraph.split())}")


def main() -> None:
    """Console entry point."""
    app()


def _register_archive_commands() -> None:
    from diancang.cli_archive import register

    register(app, user_errors)


_register_archive_commands()


if __name__ == "__main__":
    main()
