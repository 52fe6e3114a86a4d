"""The HTTP service: recognise with the live version, learn new types, promote and roll back.

``create_app(ServiceConfig(...))`` builds a FastAPI app over an :class:`~diancang.archive.Archive`.
Reading endpoints are open; mutating ones (jobs, promote, rollback) need
``Authorization: Bearer <token>`` and are refused when no token is configured. Bodies are
bounded (413), each text is bounded (422 naming it), an upload is parsed strictly (422 naming the
line), and a model is only ever loaded from the archive by version id.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from diancang.archive import Archive, GateConfig
from diancang.archive.jobs import JobStore
from diancang.data.checks import check_upload_file, public
from diancang.errors import DiancangError, NotFound
from diancang.model.tagger import Tagger
from diancang.service.checker import new_checker
from diancang.service.jobs import Job, JobRunner
from diancang.service.runtime import Batcher, LiveModel

logger = logging.getLogger("diancang.service")


class ServiceConfig(BaseModel):
    """Settings of the service (``diancang serve`` options; the token also from the
    ``DIANCANG_TOKEN`` environment variable)."""

    model_config = ConfigDict(extra="forbid")

    archive: Path = Field(default=Path("runs/archive"), description="The archive folder.")
    token: str | None = Field(
        default=None, description="Bearer token for mutating endpoints.", repr=False
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1, description="Largest recognize request body."
    )
    max_upload_bytes: int = Field(
        default=20_000_000, ge=1, description="Largest uploaded data file."
    )
    max_texts: int = Field(default=256, ge=1, description="Most texts in one recognize request.")
    max_text_chars: int = Field(default=2000, ge=1, description="Longest single text (characters).")
    max_batch: int = Field(default=32, ge=1, description="Most texts tagged in one forward pass.")
    max_wait_ms: float = Field(default=5.0, ge=0, description="How long a batch waits for company.")
    gate: GateConfig = Field(
        default_factory=lambda: GateConfig(), description="The promotion gate."
    )
    max_new_types: int = Field(default=20, ge=1, description="Most new types in one upload.")
    max_job_sentences: int = Field(
        default=20_000,
        ge=5,
        description="Most sentences a learning job trains on; a larger upload is subsampled "
        "(seeded, said in the job's log).",
    )
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="Inference backend: auto takes ONNX Runtime (fp32) when it is installed "
        "and the model exports, else PyTorch; onnx-int8 quantises the weights (opt-in).",
    )
    watch_seconds: float = Field(
        default=0.25,
        gt=0,
        description="How often the archive's live version is checked (promotions made by "
        "the command line or another process are served after at most this long plus a load).",
    )
    learn: dict[str, Any] = Field(
        default_factory=dict,
        description="Run-config overrides for learning jobs, e.g. {strategies: [cpfd]}.",
    )


class RecognizeRequest(BaseModel):
    """One text or a batch."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(default=None, description="A single text.")
    texts: list[str] | None = Field(default=None, description="Several texts.")
    types: list[str] | None = Field(
        default=None,
        description="Only these types (task-incremental: the caller knows which types the "
        "texts may hold); default: every type of the version.",
    )


class PromoteRequest(BaseModel):
    """Promotion options."""

    model_config = ConfigDict(extra="forbid", strict=True)
    force: bool = Field(
        default=False, description="Promote even if the gate rejected the candidate."
    )


def _static(name: str) -> str:
    return (files("diancang") / "service" / "static" / name).read_text("utf-8")


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application (state on ``app.state``: archive, live, batcher, jobs)."""
    archive = Archive(config.archive)
    live = LiveModel()
    batcher = Batcher(live, config.max_batch, config.max_wait_ms)
    jobs = JobRunner(JobStore(archive.db_path))
    checker = new_checker()  # uploads are parsed in another process (service/checker.py)

    def load_live() -> None:
        version = archive.live()
        if version is not None and (live.current is None or live.current[0] != version.id):
            live.swap(version.id, _load(archive, config, version.id))

    async def watch() -> None:
        """Follow the archive's live version: a promotion or rollback made elsewhere (the
        command line, another process) is served within ``watch_seconds`` plus a load."""
        while True:
            await asyncio.sleep(config.watch_seconds)
            try:
                await asyncio.to_thread(load_live)
            except Exception:  # keep serving what we have; try again next time
                logger.exception("could not load the archive's live version")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        archive.clean_scratch()  # working folders a killed server or job left behind
        await asyncio.to_thread(load_live)
        await batcher.start()
        watcher = asyncio.create_task(watch())
        yield
        watcher.cancel()
        # Wait (off the event loop) so the worker process is joined, not left orphaned.
        await asyncio.to_thread(checker.shutdown, wait=True, cancel_futures=True)
        await batcher.stop()

    app = FastAPI(
        title="diancang",
        version="1",
        description="Continual named entity recognition with a versioned archive (典藏).",
        lifespan=lifespan,
    )
    app.state.archive, app.state.live, app.state.batcher, app.state.jobs = (
        archive,
        live,
        batcher,
        jobs,
    )

    def authorized(request: Request) -> None:
        if not config.token:
            raise HTTPException(403, "mutating endpoints are disabled: the service has no token")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), config.token.encode()
        ):
            raise HTTPException(401, "missing or wrong bearer token")

    async def body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"body of {declared} bytes is over the limit of {limit}")
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise HTTPException(413, f"body is over the limit of {limit} bytes")
        return data

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_text(err)}, status_code=422)

    @app.exception_handler(DiancangError)
    async def user_error(request: Request, err: DiancangError) -> JSONResponse:
        return JSONResponse(
            {"detail": public(err)}, status_code=404 if isinstance(err, NotFound) else 422
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return _static("index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        current = live.current
        return {
            "status": "ok",
            "version": current[0] if current else None,
            "backend": current[1].backend if current else None,
        }

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        """Batching so far: requests served and forward passes run."""
        return {
            "requests": batcher.requests,
            "texts": batcher.texts,
            "batches": batcher.batches,
            "texts_per_batch_limit": config.max_batch,
            "max_wait_ms": config.max_wait_ms,
        }

    @app.post("/v1/recognize")
    async def recognize_texts(request: Request) -> dict[str, Any]:
        raw = await body(request, config.max_body_bytes)
        try:
            req = RecognizeRequest.model_validate_json(raw)
        except ValueError as err:
            raise HTTPException(422, f"body is not a recognize request: {err}") from None
        texts = req.texts if req.texts is not None else ([req.text] if req.text is not None else [])
        if not texts:
            raise HTTPException(422, "give 'text' or a non-empty 'texts' list")
        if len(texts) > config.max_texts:
            raise HTTPException(413, f"{len(texts)} texts; at most {config.max_texts} a request")
        for i, t in enumerate(texts):
            if len(t) > config.max_text_chars:
                raise HTTPException(
                    422, f"text {i} has {len(t)} characters; at most {config.max_text_chars}"
                )
        current = live.current
        if current is None:
            raise HTTPException(503, "no live version yet: learn and promote one first")
        unknown = sorted(set(req.types or []) - set(current[1].types))
        if unknown:
            raise HTTPException(
                422, f"unknown types {unknown}; version {current[0]} has {current[1].types}"
            )
        try:
            version, results = await batcher.recognize(texts, req.types or None)
        except DiancangError as err:  # a promotion took a type away meanwhile
            raise HTTPException(422, str(err)) from None
        return {"version": version, "results": results}

    @app.get("/v1/types")
    async def types() -> dict[str, Any]:
        current = live.current
        return {
            "version": current[0] if current else None,
            "types": current[1].types if current else [],
        }

    @app.get("/v1/versions")
    async def versions() -> dict[str, Any]:
        """Every version; ``live`` is the archive's (the one fact), ``serving`` the version this
        process answers with (the same, or the previous one for the moment a switch takes)."""
        current = live.current
        listed = await asyncio.to_thread(archive.versions)
        return {
            "live": next((v.id for v in listed if v.status == "live"), None),
            "serving": current[0] if current else None,
            "versions": [_summary(v.to_dict()) for v in listed],
        }

    @app.get("/v1/versions/{a}/diff/{b}")
    async def diff(a: int, b: int) -> dict[str, Any]:
        return archive.diff(a, b)

    @app.post("/v1/jobs", dependencies=[Depends(authorized)], status_code=202)
    async def submit(
        request: Request, format: Literal["jsonl", "conll"] = "jsonl"
    ) -> dict[str, Any]:
        """Learn the new types of an uploaded file (checked before the 202: every problem is a
        422 naming its line)."""
        raw = await body(request, config.max_upload_bytes)
        base = archive.live()
        if base is None:
            raise HTTPException(409, "no live version to learn from")
        folder = archive.new_scratch("upload")
        path = folder / f"upload.{format}"
        path.write_bytes(raw)
        lang = _lang(archive, base.id)  # the tagger's own language, not the data section's
        error, n = await asyncio.get_running_loop().run_in_executor(
            checker,
            check_upload_file,
            str(path),
            format,
            lang,
            base.types,
            base.id,
            config.max_new_types,
        )
        if error is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(422, f"upload rejected: {error}")
        job = jobs.submit(
            "learn",
            lambda job: _learn(job, path, format),
            cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
        )
        return {"job": job.id, "sentences": n}

    def _learn(job: Job, path: Path, fmt: str) -> dict[str, Any]:
        from diancang.incremental import learn_step

        outcome = learn_step(
            archive,
            path,
            overrides=config.learn,
            gate=config.gate,
            data_format=fmt,
            progress=lambda fraction, message: jobs.note(job, fraction, message),
            max_new_types=config.max_new_types,
            max_sentences=config.max_job_sentences,
        )
        return {"version": outcome.version.id, "decision": outcome.decision}

    @app.get("/v1/jobs")
    async def list_jobs(limit: int = 100) -> dict[str, Any]:
        """The last jobs, newest first (without their logs)."""
        return {"jobs": await asyncio.to_thread(jobs.recent, max(1, min(limit, 1000)))}

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: int) -> dict[str, Any]:
        job = await asyncio.to_thread(jobs.get, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.delete("/v1/jobs/{job_id}", dependencies=[Depends(authorized)])
    async def cancel_job(job_id: int) -> dict[str, Any]:
        """Cancel a queued job now, a running one at its next training batch."""
        job = await asyncio.to_thread(jobs.cancel, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.post("/v1/versions/{version_id}/promote", dependencies=[Depends(authorized)])
    async def promote(version_id: int, options: PromoteRequest | None = None) -> dict[str, Any]:
        version = archive.get(version_id)
        gate = version.gate or {}
        if not gate.get("accepted", False) and not (options and options.force):
            reasons = "; ".join(gate.get("reasons", [])) or "no gate decision"
            raise HTTPException(409, f"the gate rejected version {version_id}: {reasons}")
        # Loaded (seconds) on a worker thread before the switch; requests go on meanwhile.
        tagger = await asyncio.to_thread(_load, archive, config, version_id)
        archive.promote(version_id)
        live.swap(version_id, tagger)
        return {"live": version_id}

    @app.post("/v1/rollback", dependencies=[Depends(authorized)])
    async def rollback() -> dict[str, Any]:
        version = archive.rollback()
        live.swap(version.id, await asyncio.to_thread(_load, archive, config, version.id))
        return {"live": version.id}

    return app


def _load(archive: Archive, config: ServiceConfig, version: int) -> Tagger:
    """Version ``version``'s tagger on the configured backend (ONNX files cached in the
    archive's ``onnx/`` folder)."""
    from diancang.model.onnx_backend import pick_backend

    tagger = Tagger.from_pretrained(archive.model_dir(version))
    tagger.backend = pick_backend(tagger, config.backend, archive.root / "onnx" / f"v{version}")
    return tagger


def _lang(archive: Archive, version: int) -> str:
    """The language of a version's tagger (what its uploads must be read as)."""
    spec = json.loads((archive.model_dir(version) / "config.json").read_text("utf-8"))
    return str(spec.get("lang", "zh"))


def _summary(v: dict[str, Any]) -> dict[str, Any]:
    """A version without its (large) resolved config."""
    return {k: val for k, val in v.items() if k != "config"}


def _validation_text(err: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one sentence (every error's ``detail`` is a
    string)."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)
