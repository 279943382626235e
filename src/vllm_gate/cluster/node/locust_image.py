"""The Locust image for the local node, built from this machine alone: its Python, the standard library, and the
locust distribution with everything it requires from the gate's own environment, every shared library ``ldd``
lists for them, and the dynamic loader.

Laid out as the upstream ``locustio/locust`` image behaves: ``locust`` is the entrypoint (container args are its
arguments), a non-root ``locust`` user (uid 1000) with its home as the working directory, unbuffered output.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

from vllm_gate.base.errors import ClusterError
from vllm_gate.cluster.node.oci import DEFAULT_PATH, Entry, ImageSpec
from vllm_gate.cluster.node.python_image import (
    PREFIX,
    _script,
    account_entries,
    interpreter_entries,
    library_entries,
    site_packages_entries,
)

LOCUST = "locust"
LOCUST_UID = 1000  # upstream: `useradd --create-home locust` in a python:slim image, the first uid
HOME = f"home/{LOCUST}"


def locust_version() -> str:
    """The Locust this environment runs (pyproject pins it): the version the image carries and is named for."""
    return importlib.metadata.version(LOCUST)


def default_image() -> str:
    """``locustio/locust:<the pinned version>``: the upstream image's name, which the local node builds for itself."""
    return f"locustio/locust:{locust_version()}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(root: str = LOCUST) -> list[importlib.metadata.Distribution]:
    """``root`` and every distribution it requires on this platform (no extras), from the running environment."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if _canonical(name) in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ClusterError(f"images: {name}, which {root} requires, is not installed in {sys.prefix}") from None
        found[_canonical(name)] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return [found[key] for key in sorted(found)]


def locust_image(name: str) -> ImageSpec:
    """The image: this interpreter at /usr/local, its standard library, locust's distributions in its
    site-packages, the libraries all of them load (python_image.library_entries), and a ``locust`` command."""
    interpreter = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])  # the base interpreter's, also from inside a venv
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib = f"{PREFIX}/lib/{version}"
    dists = distributions()
    entries = interpreter_entries(interpreter, stdlib, version)
    entries += site_packages_entries(dists, f"{lib}/site-packages")
    (locust,) = [dist for dist in dists if _canonical(dist.name) == LOCUST]
    (command,) = [ep for ep in locust.entry_points if ep.group == "console_scripts" and ep.name == LOCUST]
    entries.append(Entry(f"{PREFIX}/bin/{LOCUST}", 0o755, _script(command.module, command.attr,
                                                                   f"{PREFIX}/bin/{version}")))
    extensions = [Path(dist.locate_file(f)) for dist in dists for f in dist.files or []
                  if f.parts[0] != ".." and (f.suffix == ".so" or ".so." in f.name)]
    # Libraries a wheel bundles (pyzmq.libs) travel with its site-packages.
    entries += library_entries(interpreter, stdlib, extensions, {Path(dist.locate_file("")) for dist in dists})
    entries += account_entries(LOCUST, LOCUST_UID, HOME)
    return ImageSpec(name, tuple(entries), entrypoint=(LOCUST,), user=f"{LOCUST_UID}:{LOCUST_UID}",
                     workdir=f"/{HOME}", env=(f"PATH={DEFAULT_PATH}", "PYTHONUNBUFFERED=1", f"HOME=/{HOME}"))
