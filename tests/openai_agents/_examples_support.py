"""The openai-agents sdist's `examples/` package, fetched once per version and kept in a cache.

The wheel does not ship the SDK's examples, so the example tests download the sdist of the
installed version with pip (`pip download --no-deps --no-binary :all:`) and extract its
`examples/` folder. The cache survives test sessions, so later runs need no network:
- `KITARU_OPENAI_AGENTS_SDIST` may name an already downloaded sdist (`.tar.gz`) or an extracted
  sdist folder (the one holding `examples/`); nothing is downloaded then;
- `KITARU_SDIST_CACHE` chooses the cache folder (default: `kitaru-adapters-sdists` in the
  system's temporary folder).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DISTRIBUTION = "openai-agents"


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise RuntimeError(
        "Cannot fetch the openai-agents sdist: neither this environment nor PATH has pip. Install "
        "pip, or set KITARU_OPENAI_AGENTS_SDIST to a downloaded openai_agents-<version>.tar.gz."
    )


def _download(version: str, cache: Path) -> Path:
    archive = cache / f"openai_agents-{version}.tar.gz"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        command = [
            *_pip_command(),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--dest",
            scratch,
            f"{DISTRIBUTION}=={version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        downloaded = sorted(Path(scratch).glob("*.tar.gz"))
        if result.returncode != 0 or not downloaded:
            raise RuntimeError(
                f"`{' '.join(command)}` failed (exit {result.returncode}); the example tests need the "
                f"openai-agents {version} sdist. Set KITARU_OPENAI_AGENTS_SDIST to a local copy to run "
                f"offline.\n{result.stdout}\n{result.stderr}"
            )
        os.replace(downloaded[0], archive)
    return archive


def _extract_examples(archive: Path, target: Path) -> Path:
    """Extract the `examples/` folder of `archive` so that `target/examples` is the package."""
    if (target / "examples" / "auto_mode.py").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch, tarfile.open(archive) as sdist:
        members = [
            member
            for member in sdist.getmembers()
            if len(Path(member.name).parts) > 1 and Path(member.name).parts[1] == "examples"
        ]
        if not members:
            raise RuntimeError(f"{archive} has no examples/ folder.")
        sdist.extractall(scratch, members=members, filter="data")
        top = Path(scratch) / Path(members[0].name).parts[0]
        try:
            os.replace(top, target)
        except OSError:  # another test process extracted it first
            if not (target / "examples" / "auto_mode.py").exists():
                raise
    return target


def openai_agents_examples_root() -> Path:
    """The folder to put on `PYTHONPATH` so that `import examples` is the SDK's examples package.

    Returns:
        A folder holding the `examples/` package of the installed openai-agents version's sdist.

    Raises:
        RuntimeError: The sdist could not be found or downloaded.
    """
    given = os.environ.get("KITARU_OPENAI_AGENTS_SDIST")
    version = importlib.metadata.version(DISTRIBUTION)
    cache = Path(
        os.environ.get("KITARU_SDIST_CACHE") or Path(tempfile.gettempdir()) / "kitaru-adapters-sdists"
    )
    if given:
        path = Path(given)
        if path.is_dir():
            if not (path / "examples" / "auto_mode.py").exists():
                raise RuntimeError(f"KITARU_OPENAI_AGENTS_SDIST={given} holds no examples/auto_mode.py.")
            return path
        return _extract_examples(path, cache / f"{path.name.removesuffix('.tar.gz')}-examples")
    archive = _download(version, cache)
    return _extract_examples(archive, cache / f"openai_agents-{version}-examples")
