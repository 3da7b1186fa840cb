"""Model folders and output paths: what the tool may replace, and readable errors for broken files.

A folder written by :meth:`Synthesizer.save` carries the marker file :data:`MARKER`; only such a
folder (or an empty / new one) is replaced by ``train --out`` without ``--force``. Output files
(``generate -o``) never replace an existing file without ``--force`` and never land inside a model
folder. :func:`check_model_dir` and :func:`load_errors` turn a corrupt, truncated or edited model
folder into one :class:`ModelFileError` naming the file and the fix (torch's own messages, which
advise ``weights_only=False`` for a foreign pickle, never reach the user).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synth_pipeline.errors import ModelFileError, OutputError, SynthPipelineError

MARKER = ".synth-pipeline-model"
MODEL_FILES = ("encoder.json", "model_config.json", "weights.pt", "synthesizer.json")
# keys each JSON file must hold (what the loaders read without a default)
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "synthesizer.json": ("fit_seconds",),
    "model_config.json": ("format_version", "config", "dims"),
    "encoder.json": ("schema", "codecs", "layout"),
}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_FIX = ("re-train it (synth-pipeline train ... --out DIR) or restore the folder from its MLflow run "
        "(artifacts 'model/synthesizer')")


def write_marker(directory: str | Path) -> None:
    """Mark ``directory`` as a model folder written by this tool (Synthesizer.save)."""
    Path(directory, MARKER).write_text(
        "synth-pipeline model folder (Synthesizer.save); `synth-pipeline train --out` may replace it\n",
        encoding="utf-8",
    )


def is_model_dir(path: str | Path) -> bool:
    return Path(path, MARKER).is_file()


def _looks_like_model(path: Path) -> bool:
    """A model folder written before the marker existed (all four model files present)."""
    return all((path / f).is_file() for f in MODEL_FILES)


def _writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder (so mkdir + write work)."""
    for anc in [path.parent, *path.parent.parents]:
        if anc.exists():
            if not anc.is_dir():
                raise OutputError(f"{what} '{path}' cannot be created: '{anc}' is a file, not a folder; "
                                  f"choose a path in a folder")
            if not os.access(anc, os.W_OK | os.X_OK):
                raise OutputError(f"{what} '{path}' cannot be written: folder '{anc}' is not writable; "
                                  f"choose a writable location")
            return


def check_model_out(path: str | Path, force: bool = False) -> Path:
    """``train --out``: a new or empty folder, or a model folder this tool wrote; anything else only
    with ``force`` (its contents would be replaced)."""
    p = Path(path).expanduser()
    if p.is_file() or (p.exists() and not p.is_dir()):
        raise OutputError(f"--out '{p}' is a file, not a folder; give a new folder for the model")
    if p.is_dir():
        entries = list(p.iterdir())
        if entries and not is_model_dir(p) and not force:
            kind = "a model folder written before marker files existed" if _looks_like_model(p) else \
                "not a model folder written by synth-pipeline"
            raise OutputError(
                f"--out '{p}' exists and is {kind} (no {MARKER} file); training would delete its "
                f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}. Choose a new folder, or pass "
                f"--force to replace it"
            )
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise OutputError(f"--out '{p}' cannot be replaced: folder '{p.parent}' is not writable")
    else:
        _writable_parent(p, "--out")
    return p


def output_format(path: str | Path, what: str = "--output", formats: dict[str, str] | None = None) -> str:
    """``parquet`` or ``csv`` from the suffix; anything else is refused, listing the valid ones."""
    formats = formats or OUTPUT_FORMATS
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise OutputError(f"{what} '{path}' has suffix '{suffix or '(none)'}'; the format follows the suffix, "
                          f"valid suffixes: {', '.join(formats)}")
    return formats[suffix]


def check_output_file(path: str | Path, force: bool = False, what: str = "--output",
                      formats: dict[str, str] | None = None) -> str:
    """An output file path: known suffix, not a folder, not inside a model folder, not an existing
    file unless ``force``, in a writable place. Returns the format."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"{what} '{p}' is a folder; give a file path such as '{p / 'synthetic.parquet'}'")
    for anc in [p.parent, *p.parent.parents]:
        if anc.is_dir() and (is_model_dir(anc) or _looks_like_model(anc)):
            raise OutputError(f"{what} '{p}' lies inside the model folder '{anc}'; write outputs elsewhere "
                              f"(the model's files must not be replaced)")
    fmt = output_format(p, what, formats)
    if p.exists() and not force:
        raise OutputError(f"{what} '{p}' already exists; choose a new path or pass --force to replace it")
    _writable_parent(p, what)
    return fmt


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """An output folder (created if missing): not a file, in a writable place."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} '{p}' is a file, not a folder; give a folder path")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{what} '{p}' is not writable; choose a writable folder")
    else:
        _writable_parent(p, what)
    return p


# ------------------------------------------------------------------------------------------------
# reading model folders
# ------------------------------------------------------------------------------------------------
def read_json(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model folder's JSON file as a dict; missing, unreadable, invalid JSON or missing keys ->
    ModelFileError naming the file and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"model folder '{path.parent}' lacks {path.name}; {_FIX}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"model file '{path}' cannot be read ({type(e).__name__}); {_FIX}") from None
    if not text.strip():
        raise ModelFileError(f"model file '{path}' is empty (truncated copy?); {_FIX}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"model file '{path}' is not valid JSON (line {e.lineno}: {e.msg}); it was "
                             f"truncated or edited; {_FIX}") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"model file '{path}' holds a JSON {type(obj).__name__}, not an object; {_FIX}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ModelFileError(f"model file '{path}' lacks key(s) {missing}; it was edited or written by an "
                             f"incompatible version; {_FIX}")
    return obj


def check_model_dir(directory: str | Path) -> Path:
    """Cheap checks before loading: the folder and its four files exist, the JSON files parse and
    hold their keys, ``weights.pt`` is a non-empty torch zip archive."""
    d = Path(directory)
    if not d.is_dir():
        what = "is a file" if d.exists() else "does not exist"
        raise ModelFileError(f"model folder '{d}' {what}; pass a folder written by "
                             f"'synth-pipeline train --out' (Synthesizer.save)")
    for f in MODEL_FILES:
        if not (d / f).is_file():
            raise ModelFileError(f"model folder '{d}' lacks {f}; pass a folder written by "
                                 f"'synth-pipeline train --out' (Synthesizer.save), or {_FIX}")
    for f, keys in REQUIRED_KEYS.items():
        read_json(d / f, keys)
    w = d / "weights.pt"
    size = w.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file '{w}' is empty (0 bytes; an interrupted copy?); {_FIX}")
    with open(w, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise ModelFileError(f"model file '{w}' is not a torch weights archive (corrupt, or not written by "
                             f"synth-pipeline); it is never unpickled. {_FIX}")
    return d


@contextmanager
def load_errors(directory: str | Path, files: str = "weights.pt / model_config.json") -> Iterator[None]:
    """Translate any failure while loading a model folder into ModelFileError (typed errors such as
    an unavailable device pass through). The message names the folder, the files and the fix, never
    torch's text (which suggests ``weights_only=False`` for foreign pickles)."""
    try:
        yield
    except SynthPipelineError:
        raise
    except MemoryError:
        raise
    except KeyError as e:
        raise ModelFileError(f"model folder '{directory}': {files} lacks the entry {e}; the folder is "
                             f"incomplete or from an incompatible version; {_FIX}") from None
    except Exception as e:  # torch/pickle/zip/JSON errors of a corrupt or truncated folder
        raise ModelFileError(f"model folder '{directory}': {files} cannot be loaded ({type(e).__name__}: the file "
                             f"is corrupt, truncated or does not match the model configuration); {_FIX}") from None
