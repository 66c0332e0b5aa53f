"""The lock files in requirements/ agree with pyproject.toml.

scripts/setup, CI and the Dockerfile install only from the locks (exact versions,
hash-checked), so a dependency added to pyproject.toml without `scripts/lock`
would silently be missing. These checks read the files; they need no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def _pins(lock: str) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line in ``requirements/lock``."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if match := PIN.match(line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"]]
    for extra in extras:
        names += project["optional-dependencies"][extra]
    linux = {"platform_system": "Linux", "sys_platform": "linux", "python_version": "3.11"}
    return [r for r in map(Requirement, names) if r.marker is None or r.marker.evaluate(linux)]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("dev.lock", ("dev", "pocketsphinx", "whisper", "piper", "embeddings")),
        ("runtime.lock", ("pocketsphinx", "whisper", "embeddings")),
        ("image.lock", ("pocketsphinx", "whisper")),
    ],
)
def test_every_dependency_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = _pins(lock)
    missing = [str(r) for r in _requirements(*extras) if canonicalize_name(r.name) not in pins]
    outside = [
        f"{r.name}=={pins[canonicalize_name(r.name)]} (wants {r.specifier})"
        for r in _requirements(*extras)
        if canonicalize_name(r.name) in pins
        and not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not missing, f"not in requirements/{lock} (run scripts/lock): {missing}"
    assert not outside, f"pinned outside pyproject's range (run scripts/lock): {outside}"


def test_every_pin_is_hash_checked_and_one_version_across_locks() -> None:
    dev = _pins("dev.lock")
    for lock in ("dev.lock", "runtime.lock", "image.lock"):
        text = (ROOT / "requirements" / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
        unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
        assert not unhashed, f"{lock}: pins without a hash: {unhashed}"
        differing = {n: v for n, v in _pins(lock).items() if dev.get(n) != v}
        assert not differing, f"{lock} differs from dev.lock: {differing}"


def test_torch_is_the_cpu_build_pinned_in_torch_txt() -> None:
    wanted = (ROOT / "requirements" / "torch.txt").read_text()
    pin = next(line for line in wanted.splitlines() if line.startswith("torch=="))
    assert pin.endswith("+cpu")
    assert _pins("dev.lock")["torch"] == pin.removeprefix("torch==")
    assert "torch" not in _pins("image.lock")
