"""What any image holding this machine's Python needs: the interpreter, its standard library, distributions'
files, the shared libraries they load (found by ``ldd``), and console-script launchers.

The Locust image (locust_image.py) and the real engine's image (vllm_image.py) are built from these.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from vllm_gate.base.errors import ClusterError, ToolMissing
from vllm_gate.cluster.node.oci import LDD_TIMEOUT_S, Entry

PREFIX = "usr/local"  # the image's Python finds its standard library from its binary's place: bin/../lib/pythonX.Y
# Not copied from the standard library: its test suites, GUI and IDE, installer, 2to3 and the static build tree.
STDLIB_SKIPPED = frozenset({"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"})
STDLIB_SKIPPED_PREFIX = "config-"
DYNLOAD_SKIPPED = re.compile(r"^(_tkinter|_test\w*|_ctypes_test|_xxtestfuzz|xxlimited\w*)\.")
PYC_HEADER = 16
FLAG_HASH_BASED = 0b01



def unchecked_pyc(pyc: bytes, source: bytes, source_stat: os.stat_result) -> bytes | None:
    """The compiled ``pyc`` of ``source`` as an unchecked hash-based pyc, or None when it is not this source's.

    The image's files all carry mtime 0, so a timestamp pyc would never match its source there: Python would
    compile every module again at each start (it cannot write __pycache__ as the non-root user). A pyc whose
    timestamp and size match the source here is that source's compilation; its header becomes the hash form.
    """
    if len(pyc) < PYC_HEADER or pyc[:4] != importlib.util.MAGIC_NUMBER:
        return None
    flags = int.from_bytes(pyc[4:8], "little")
    digest = importlib.util.source_hash(source)
    if flags & FLAG_HASH_BASED:
        return pyc if pyc[8:16] == digest else None
    mtime, size = int.from_bytes(pyc[8:12], "little"), int.from_bytes(pyc[12:16], "little")
    if mtime != int(source_stat.st_mtime) & 0xFFFFFFFF or size != source_stat.st_size & 0xFFFFFFFF:
        return None
    return importlib.util.MAGIC_NUMBER + FLAG_HASH_BASED.to_bytes(4, "little") + digest + pyc[PYC_HEADER:]


def _file_entries(source: Path, target: str) -> Iterator[Entry]:
    """``source`` at ``target``, its mode's executable bit kept; a module with its valid pyc beside it."""
    data = source.read_bytes()
    mode = 0o755 if os.access(source, os.X_OK) else 0o644
    yield Entry(target, mode, data)
    if source.suffix != ".py":
        return
    pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
    if pyc.is_file():
        converted = unchecked_pyc(pyc.read_bytes(), data, source.stat())
        if converted is not None:
            yield Entry(f"{target.rpartition('/')[0]}/__pycache__/{pyc.name}", 0o644, converted)


# This host's own customisation and provenance, never the image's: startup hooks (site/usercustomize, .pth files
# run code at interpreter start) and direct_url.json (may name a private package index).
HOST_ONLY = frozenset({"sitecustomize.py", "usercustomize.py", "direct_url.json", "EXTERNALLY-MANAGED"})


def _is_copied(path: Path) -> bool:
    return ("__pycache__" not in path.parts and path.suffix not in (".pyc", ".pth")
            and path.name not in HOST_ONLY)


def stdlib_entries(stdlib: Path, target: str) -> list[Entry]:
    """The standard library under ``target`` (its pure modules and lib-dynload), less what STDLIB_SKIPPED names."""
    entries: list[Entry] = []
    for directory, subdirs, files in os.walk(stdlib):
        here = Path(directory)
        if here == stdlib:
            subdirs[:] = [d for d in subdirs if d not in STDLIB_SKIPPED and not d.startswith(STDLIB_SKIPPED_PREFIX)]
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        for name in files:
            path = here / name
            if not _is_copied(path) or (here.name == "lib-dynload" and DYNLOAD_SKIPPED.match(name)):
                continue
            entries += _file_entries(path, f"{target}/{path.relative_to(stdlib)}")
    return entries


def site_packages_entries(dists: Iterable[importlib.metadata.Distribution], target: str) -> list[Entry]:
    """Every file each distribution's RECORD lists inside site-packages (not its scripts), under ``target``."""
    entries: list[Entry] = []
    for dist in dists:
        if dist.files is None:
            raise ClusterError(f"images: {dist.name} {dist.version} has no RECORD; its files cannot be listed")
        for record in dist.files:
            if record.parts[0] == ".." or not _is_copied(Path(str(record))):
                continue
            path = Path(dist.locate_file(record))
            if path.is_file():
                entries += _file_entries(path, f"{target}/{record.as_posix()}")
    return entries


def ldd_libraries(objects: list[Path], *, missing_ok: bool = False) -> set[Path]:
    """Every library ``ldd`` lists for ``objects`` (the dynamic loader included), one ldd run for all. A library
    this host lacks is an error unless ``missing_ok`` (an optional extension this host never loads either)."""
    if not objects:
        return set()
    try:
        out = subprocess.run(["ldd", *map(str, objects)], capture_output=True, text=True, timeout=LDD_TIMEOUT_S,
                             check=False)
    except FileNotFoundError as e:
        raise ToolMissing("images: ldd is not installed (Debian package libc-bin)") from e
    found: set[Path] = set()
    current = str(objects[0])
    for line in out.stdout.splitlines():
        if not line.startswith(("\t", " ")):
            current = line.rstrip(":")  # with several files ldd names each before its list
            continue
        if "not found" in line and not missing_ok:
            raise ClusterError(f"images: {current} needs a library this host lacks: {line.strip()}")
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            found.add(Path(match.group(1)))
    if out.returncode != 0 and not found:
        raise ClusterError(f"images: ldd failed: {out.stderr.strip()[-300:]}")
    return found


def _script(module: str, attr: str, python: str) -> bytes:
    return (f"#!/{python}\nimport sys\nfrom {module} import {attr}\n\n"
            f"if __name__ == \"__main__\":\n    sys.exit({attr}())\n").encode()


def interpreter_entries(interpreter: Path, stdlib: Path, version: str) -> list[Entry]:
    """The interpreter as ``PREFIX/bin/<version>`` and ``python3``, and its standard library under PREFIX/lib."""
    if not (stdlib / "os.py").is_file():
        raise ClusterError(f"images: no standard library at {stdlib} for {interpreter}")
    binary = interpreter.read_bytes()
    return [Entry(f"{PREFIX}/bin/{version}", 0o755, binary), Entry(f"{PREFIX}/bin/python3", 0o755, binary),
            *stdlib_entries(stdlib, f"{PREFIX}/lib/{version}")]


def library_entries(interpreter: Path, stdlib: Path, extensions: Iterable[Path],
                    bundled: Iterable[Path], *, missing_ok: bool = False) -> list[Entry]:
    """Every system library the interpreter, its lib-dynload and ``extensions`` load, where ldd finds them (libpython
    too: where the interpreter's RUNPATH looks for it), less those inside a ``bundled`` directory (a wheel's own
    ``.libs``, which travel with it); ``missing_ok`` as ldd_libraries."""
    dynload = [p for p in stdlib.joinpath("lib-dynload").glob("*.so") if not DYNLOAD_SKIPPED.match(p.name)]
    objects = [interpreter, *dynload, *extensions]
    own = [d.resolve() for d in bundled]
    return [Entry(str(library).lstrip("/"), 0o755, library.resolve().read_bytes())
            for library in sorted(ldd_libraries(objects, missing_ok=missing_ok))
            if not any(library.resolve().is_relative_to(d) for d in own)]


def account_entries(user: str, uid: int, home: str) -> list[Entry]:
    """root, ``user`` (``uid``, its home ``home``) and nobody, their groups, and a world-writable /tmp."""
    return [
        Entry("etc/passwd", 0o644, f"root:x:0:0:root:/root:/usr/sbin/nologin\n{user}:x:{uid}:{uid}::/{home}:"
                                   "/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                                   .encode()),
        Entry("etc/group", 0o644, f"root:x:0:\n{user}:x:{uid}:\nnogroup:x:65534:\n".encode()),
        Entry("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files dns\n"),
        Entry(home, 0o755, uid=uid, gid=uid),
        Entry("tmp", 0o1777),
    ]
