"""``diancang`` commands over the archive: demo, serve, learn, versions, promote, rollback, diff."""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer

from diancang.errors import ConfigError, DiancangError

ARCHIVE = Annotated[Path, typer.Option(help="The archive folder.")]
DEFAULT_ARCHIVE = Path("runs/archive")


def _aux_task(spec: str) -> dict[str, Any]:
    """``NAME=KIND:FORMAT:PATH`` -> a multitask ``aux_tasks`` entry."""
    name, _, rest = spec.partition("=")
    parts = rest.split(":", 2)
    if not name or len(parts) != 3 or parts[0] not in ("ner", "cws"):
        raise ConfigError(
            f"--aux {spec!r} is not NAME=KIND:FORMAT:PATH",
            fix="e.g. --aux msr=cws:segmented:msr_test_gold.utf8 or --aux pd=ner:conll:pd.txt",
        )
    kind, fmt, path = parts
    return {"name": name, "kind": kind, "format": fmt, "path": path}


def _version_strategies(archive: Path, version: int | None) -> list[str]:
    """The strategies (names) the version a step starts from was trained with."""
    from diancang.archive import Archive
    from diancang.strategies.base import split_id

    names = [split_id(s)[0] for s in Archive(archive).pick(version).strategies]
    return [n for n in names if n != "multitask"]


def _say(fraction: float, message: str | None) -> None:
    """A learning job's progress on the terminal: its log lines (not every batch)."""
    if message:
        typer.echo(message)


def _echo(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _demo_config(epochs: int) -> Any:
    """The embedded demo (MSRA, e5-small) trained in one step, with its strategies (cpfd and a
    replay memory, the best measured) recorded for later steps."""
    from diancang.config import load_config

    path = Path(str(files("diancang") / "resources" / "demo.yaml"))
    return load_config(path, [f"train.epochs={epochs}"])


def register(app: typer.Typer, user_errors: Any) -> None:
    """Add the archive commands to the ``diancang`` app."""

    @app.command()
    @user_errors
    def demo(
        archive: ARCHIVE = DEFAULT_ARCHIVE,
        epochs: Annotated[int, typer.Option(help="Epochs of the first version.")] = 3,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port.")] = 8000,
        serve: Annotated[bool, typer.Option(help="Serve after building.")] = True,
        learn_epochs: Annotated[int, typer.Option(help="Epochs of learning jobs.")] = 5,
    ) -> None:
        """Build a first version offline (MSRA demo data, PER/LOC/ORG, e5-small) and serve it."""
        from diancang.archive import Archive
        from diancang.incremental import bootstrap

        store = Archive(archive)
        if store.live() is None:
            typer.echo("building the first version (a few minutes on 2 CPU cores)...")
            outcome = bootstrap(store, _demo_config(epochs), progress=_say)
            _echo({"version": outcome.version.id, "metrics": outcome.version.metrics})
        if serve:
            _serve(archive, host, port, {"train": {"epochs": learn_epochs}})

    @app.command()
    @user_errors
    def serve(
        archive: ARCHIVE = DEFAULT_ARCHIVE,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port.")] = 8000,
        learn_epochs: Annotated[
            int | None, typer.Option(help="Epochs of learning jobs (default: the version's).")
        ] = None,
        learn_strategies: Annotated[
            str | None, typer.Option(help="Comma list of strategies for learning jobs.")
        ] = None,
        create: Annotated[
            bool, typer.Option(help="Start an empty archive when the folder holds none.")
        ] = False,
        backend: Annotated[
            str, typer.Option(help="auto (ONNX Runtime when installed), torch, onnx, onnx-int8.")
        ] = "auto",
    ) -> None:
        """Serve the archive's live version over HTTP (token: DIANCANG_TOKEN)."""
        if not create and not (archive / "archive.sqlite3").is_file():
            raise DiancangError(
                "no archive here" + (" (it is a file)" if archive.is_file() else ""),
                path=archive,
                fix="give the folder of an archive (`diancang demo` makes one), or pass "
                "--create to start an empty one",
            )
        learn: dict[str, Any] = {}
        if learn_epochs is not None:
            learn["train"] = {"epochs": learn_epochs}
        if learn_strategies:
            learn["strategies"] = learn_strategies.split(",")
        _serve(archive, host, port, learn, backend)

    @app.command()
    @user_errors
    def learn(
        data: Annotated[Path, typer.Option(help="Sentences annotated for the new types.")],
        archive: ARCHIVE = DEFAULT_ARCHIVE,
        from_version: Annotated[
            int | None, typer.Option("--from", help="Version to start from (default: live).")
        ] = None,
        format: Annotated[str, typer.Option(help="jsonl or conll.")] = "jsonl",
        strategies: Annotated[
            str | None, typer.Option(help="Comma list of strategies (default: the version's).")
        ] = None,
        epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
        type_text: Annotated[
            list[str] | None,
            typer.Option(
                help="NAME=TEXT: a one-line description of a new type, read by the "
                "label_semantic and prompt_span heads (repeatable)."
            ),
        ] = None,
        promote: Annotated[bool, typer.Option(help="Promote if the gate accepts.")] = False,
        aux: Annotated[
            list[str] | None,
            typer.Option(
                help="NAME=KIND:FORMAT:PATH, an auxiliary task trained beside this step "
                "(multitask, hard sharing), e.g. msr=cws:segmented:msr_gold.utf8 (repeatable)."
            ),
        ] = None,
    ) -> None:
        """Learn new types from DATA on top of a version; register a candidate (and promote)."""
        from diancang.archive import Archive
        from diancang.incremental import learn_step

        if not data.is_file():
            raise DiancangError("data file not found", path=data, fix="give an existing file")
        overrides: dict[str, Any] = {}
        if strategies:
            overrides["strategies"] = strategies.split(",")
        if epochs is not None:
            overrides["train"] = {"epochs": epochs}
        if type_text:
            bad = [t for t in type_text if "=" not in t or not t.split("=", 1)[0].strip()]
            if bad:
                raise ConfigError(
                    f"--type-text {bad[0]!r} is not NAME=TEXT", fix="e.g. --type-text PRO=产品"
                )
            overrides["types"] = dict(t.split("=", 1) for t in type_text)
        if aux:
            overrides["strategy_params"] = {"multitask": {"aux_tasks": [_aux_task(a) for a in aux]}}
            base = strategies.split(",") if strategies else None
            overrides["strategies"] = [*(base or _version_strategies(archive, from_version)),
                                       "multitask"]  # fmt: skip
        store = Archive(archive)
        outcome = learn_step(
            store,
            data,
            from_version=from_version,
            overrides=overrides,
            data_format=format,
            progress=_say,
        )
        if promote and outcome.decision["accepted"]:
            store.promote(outcome.version.id)
        _echo({"version": outcome.version.id, "gate": outcome.decision})

    @app.command()
    @user_errors
    def versions(archive: ARCHIVE = DEFAULT_ARCHIVE) -> None:
        """List the archive's versions (status, types, dev macro F1, gate)."""
        from diancang.archive import Archive

        for v in Archive(archive).versions():
            gate = v.gate or {}
            macro = v.metrics.get("macro")
            typer.echo(
                f"{v.id:>4}  {v.status:<9} parent={v.parent}  types={','.join(v.types)}  "
                f"macro={'–' if macro is None else f'{100 * macro:.1f}'}  "
                f"gate={'accepted' if gate.get('accepted') else 'rejected'}"
            )

    @app.command("promote")
    @user_errors
    def promote_cmd(
        version: Annotated[int, typer.Argument(help="Version id.")],
        archive: ARCHIVE = DEFAULT_ARCHIVE,
        force: Annotated[bool, typer.Option(help="Even if the gate rejected it.")] = False,
    ) -> None:
        """Make VERSION live (refused when its gate decision was a rejection, unless --force)."""
        from diancang.archive import Archive

        store = Archive(archive)
        gate = store.get(version).gate or {}
        if not gate.get("accepted") and not force:
            raise DiancangError(
                f"the gate rejected version {version}: {'; '.join(gate.get('reasons', []))}",
                fix="learn again with more data, or pass --force to promote anyway",
            )
        store.promote(version)
        typer.echo(f"version {version} is live")

    @app.command()
    @user_errors
    def rollback(archive: ARCHIVE = DEFAULT_ARCHIVE) -> None:
        """Retire the live version and make the one before it live again."""
        from diancang.archive import Archive

        typer.echo(f"version {Archive(archive).rollback().id} is live")

    @app.command()
    @user_errors
    def gc(archive: ARCHIVE = DEFAULT_ARCHIVE) -> None:
        """Remove unreferenced blobs and the working folders that killed processes left."""
        from diancang.archive import Archive

        typer.echo(f"removed {Archive(archive).gc()} unreferenced blobs and stale scratch folders")

    @app.command()
    @user_errors
    def diff(
        a: Annotated[int, typer.Argument(help="Version A.")],
        b: Annotated[int, typer.Argument(help="Version B.")],
        archive: ARCHIVE = DEFAULT_ARCHIVE,
    ) -> None:
        """What changed from A to B: types, per-type dev F1, config."""
        from diancang.archive import Archive

        _echo(Archive(archive).diff(a, b))


def _serve(
    archive: Path,
    host: str,
    port: int,
    learn: dict[str, Any] | None = None,
    backend: str = "auto",
) -> None:
    import uvicorn
    from pydantic import ValidationError

    from diancang.service.app import ServiceConfig, create_app

    try:
        config = ServiceConfig(
            archive=archive,
            token=os.environ.get("DIANCANG_TOKEN") or None,
            learn=learn or {},
            backend=backend,  # type: ignore[arg-type]
        )
    except ValidationError:
        raise ConfigError(
            f"unknown backend {backend!r}", fix="use auto, torch, onnx or onnx-int8"
        ) from None
    if not config.token:
        typer.echo(
            "note: DIANCANG_TOKEN is not set, so learning, promotion and rollback over "
            "HTTP are disabled"
        )
    typer.echo(f"serving http://{host}:{port}/ (API docs: /docs)")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
