"""Which model specs one gate run certifies: ``--model`` (repeatable, or ``all``) and ``--set`` aimed at one of them."""

from __future__ import annotations

from pathlib import Path

from vllm_gate.base.errors import SpecError
from vllm_gate.spec import ModelSpec, available, load_spec, resolve_path

ALL = "all"  # --model all: every spec in models/, sorted by name
TARGET_SEP = ":"  # --set NAME:KEY=VALUE overrides a field of model NAME only


def model_refs(given: list[str], models_dir: Path) -> list[str]:
    """The --model values in the order given, ``all`` expanded to every spec in ``models_dir``; each once."""
    refs: list[str] = []
    for ref in given:
        for one in available(models_dir) if ref == ALL else [ref]:
            if one not in refs:
                refs.append(one)
    return refs


def split_target(item: str) -> tuple[str | None, str]:
    """``mistral-7b:resources.gpu_type=h100-sxm`` -> ("mistral-7b", "resources.gpu_type=h100-sxm").

    Only the key side may name a model: a value may hold colons (an image tag, a URL).
    """
    key = item.partition("=")[0]
    if TARGET_SEP not in key:
        return None, item
    target, _, override = item.partition(TARGET_SEP)
    return target, override


def _name(ref: str, models_dir: Path) -> str:
    """What --set calls a model: its name in models/, or a path's file name without .yaml."""
    return resolve_path(ref, models_dir).stem


def overrides_per_model(refs: list[str], sets: list[str], models_dir: Path) -> dict[str, list[str]]:
    """Each ref's --set overrides, in the order given: untargeted ones apply to every model."""
    names = {_name(ref, models_dir): ref for ref in refs}
    per_ref: dict[str, list[str]] = {ref: [] for ref in refs}
    for item in sets:
        target, override = split_target(item)
        if target is None:
            for overrides in per_ref.values():
                overrides.append(override)
        elif target in names:
            per_ref[names[target]].append(override)
        else:
            raise SpecError(f"--set {item}: {target!r} is not a model of this run (models: {', '.join(names)}); "
                            f"NAME{TARGET_SEP}KEY=VALUE sets KEY for model NAME only")
    return per_ref


def load_specs(given: list[str], sets: list[str], models_dir: Path) -> list[ModelSpec]:
    """Load and validate every chosen spec with its overrides; two specs may not share a name (the release's)."""
    refs = model_refs(given, models_dir)
    if not refs:
        raise SpecError(f"--model {ALL}: no model spec in {models_dir}")
    per_ref = overrides_per_model(refs, sets, models_dir)
    specs = [load_spec(ref, models_dir, per_ref[ref]) for ref in refs]
    seen: dict[str, str] = {}
    for ref, spec in zip(refs, specs, strict=True):
        if spec.name in seen:
            raise SpecError(f"--model {seen[spec.name]} and --model {ref} are both named {spec.name!r}: each model "
                            "of a run needs its own name (it is the Helm release's)")
        seen[spec.name] = ref
    return specs
