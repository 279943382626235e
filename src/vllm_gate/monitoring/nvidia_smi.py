"""Parse nvidia-smi's output formats (the CSV query, -q -x XML, the plain table) and NVML's JSON dump."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Generic, TypeVar

from vllm_gate.monitoring.gpu import GpuReading, TelemetryError

# The fields the gate queries, in this order; scripts/capture-gpu-telemetry.sh captures the same list.
QUERY_FIELDS: tuple[str, ...] = (
    "index", "uuid", "name", "utilization.gpu", "utilization.memory", "memory.used", "memory.total",
    "memory.free", "temperature.gpu", "power.draw",
)
# What the gate runs in a model pod through the exec API when there is no dcgm-exporter.
QUERY_ARGS: list[str] = ["nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]

_REQUIRED = frozenset({"index", "uuid", "name", "utilization.gpu", "memory.used", "memory.free"})
# How nvidia-smi writes a value the GPU or driver cannot give (CSV brackets it, XML and the table do not).
_UNAVAILABLE = frozenset({"[N/A]", "[Not Supported]", "N/A", "Not Supported"})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# A header cell is a lowercase field name, maybe with a unit; a data row starts with an index, UUID or name.
_HEADER_CELL = re.compile(r"[a-z][a-z0-9_.]*(?:\s*\[.*\])?")
_MIB = 2**20

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceSummary:
    """A GPU as the lossy formats show it (the plain table, NVML's JSON): no UUID and no free memory."""

    index: int
    name: str
    util_pct: float | None
    mem_used_mib: float
    mem_total_mib: float
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class GpuReport(Generic[T]):
    """The GPUs one nvidia-smi or NVML call saw, and the driver that answered."""

    driver_version: str
    gpus: tuple[T, ...]


def _number(value: str, unit: str, where: str) -> float:
    """``value`` with its ``unit`` suffix removed."""
    value = value.strip()
    if value in _UNAVAILABLE:
        raise TelemetryError(f"{where}: a required value is {value}")
    if unit and value.endswith(unit):
        value = value[: -len(unit)].strip()
    if not _NUMBER.fullmatch(value):
        raise TelemetryError(f"{where}: {value!r} is not a number" + (f" of {unit}" if unit else ""))
    return float(value)


def _optional(value: str | None, unit: str, where: str) -> float | None:
    """As _number, but None where the field is absent or nvidia-smi marks it not available."""
    if value is None or value.strip() in _UNAVAILABLE:
        return None
    return _number(value, unit, where)


def parse_query(text: str) -> list[GpuReading]:
    """``nvidia-smi --query-gpu=...`` output, ``--format=csv`` (header, units) or ``csv,noheader,nounits``."""
    rows = [(n, line, next(csv.reader([line], skipinitialspace=True)))
            for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    fields, units = list(QUERY_FIELDS), [""] * len(QUERY_FIELDS)
    if rows and _HEADER_CELL.fullmatch(rows[0][2][0].strip()):
        header = [re.fullmatch(r"(\S+?)\s*(?:\[(.*)\])?", h.strip()) for h in rows.pop(0)[2]]
        fields = [m[1] if m else "" for m in header]
        units = [(m[2] or "") if m else "" for m in header]
        if missing := sorted(_REQUIRED - set(fields)):
            raise TelemetryError(f"nvidia-smi query header lacks {', '.join(missing)}: {','.join(fields)!r}")
    return [_query_row(n, line, cells, fields, units) for n, line, cells in rows]


def _query_row(n: int, line: str, cells: list[str], fields: list[str], units: list[str]) -> GpuReading:
    where = f"nvidia-smi query line {n} {line.strip()!r}"
    if len(cells) != len(fields):
        raise TelemetryError(f"{where}: {len(cells)} fields, expected {len(fields)} ({','.join(fields)})")
    row = dict(zip(fields, cells, strict=True))
    unit = dict(zip(fields, units, strict=True))

    def req(field: str) -> float:
        return _number(row[field], unit[field], f"{where} {field}")

    def opt(field: str) -> float | None:
        return _optional(row.get(field), unit.get(field, ""), f"{where} {field}")

    return GpuReading(
        index=int(req("index")), uuid=row["uuid"].strip(), name=row["name"].strip(),
        util_pct=req("utilization.gpu"), mem_used_mib=req("memory.used"), mem_free_mib=req("memory.free"),
        mem_total_mib=opt("memory.total"), temperature_c=opt("temperature.gpu"), power_w=opt("power.draw"),
    )


def parse_xml(text: str) -> GpuReport[GpuReading]:
    """``nvidia-smi -q -x``: product name, UUID, framebuffer total/reserved/used/free, utilization, driver."""
    try:
        # The input is nvidia-smi's own output (from the model pod or a capture); expat resolves no external
        # entities, and defusedxml is not a dependency.
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise TelemetryError(f"nvidia-smi -q -x output is not XML: {exc}") from None
    driver = root.findtext("driver_version")
    if not driver:
        raise TelemetryError("nvidia-smi -q -x output has no driver_version")
    # GPUs are listed in nvidia-smi's index order; the XML carries no index element (minor_number is the
    # /dev/nvidiaN number, which need not match).
    return GpuReport(driver.strip(), tuple(_xml_gpu(i, gpu) for i, gpu in enumerate(root.iter("gpu"))))


def _xml_gpu(index: int, gpu: ET.Element) -> GpuReading:
    where = f"nvidia-smi -q -x GPU {gpu.get('id', index)}"

    def req(path: str, unit: str) -> float:
        value = gpu.findtext(path)
        if value is None:
            raise TelemetryError(f"{where}: no <{path}>")
        return _number(value, unit, f"{where} {path}")

    def opt(path: str, unit: str) -> float | None:
        return _optional(gpu.findtext(path), unit, f"{where} {path}")

    uuid, name = gpu.findtext("uuid"), gpu.findtext("product_name")
    if not uuid or not name:
        raise TelemetryError(f"{where}: no <uuid> or <product_name>")
    # Drivers since 530 report gpu_power_readings/average_power_draw (what --query-gpu power.draw gives);
    # older ones power_readings/power_draw.
    power = opt("gpu_power_readings/average_power_draw", "W")
    if power is None:
        power = opt("power_readings/power_draw", "W")
    return GpuReading(
        index=index, uuid=uuid.strip(), name=name.strip(), util_pct=req("utilization/gpu_util", "%"),
        mem_used_mib=req("fb_memory_usage/used", "MiB"), mem_free_mib=req("fb_memory_usage/free", "MiB"),
        mem_total_mib=opt("fb_memory_usage/total", "MiB"), mem_reserved_mib=opt("fb_memory_usage/reserved", "MiB"),
        temperature_c=opt("temperature/gpu_temp", "C"), power_w=power,
    )


_DRIVER = re.compile(r"Driver Version:\s*(\S+)")
# A GPU takes two rows of the table: "| 0  NAME  On |" then "| Fan Temp Perf Pwr:Usage/Cap | Memory | Util ...".
_TABLE_NAME = re.compile(r"^\|\s*(\d+)\s+(.+?)\s+(?:On|Off)\s+\|")
_TABLE_STATS = re.compile(
    r"^\|\s*\S+\s+(?P<temp>\S+)\s+\S+\s+(?P<power>\S+)\s*/\s*\S+\s*\|"
    r"\s*(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB\s*\|\s*(?P<util>\S+)\s")


def parse_table(text: str) -> GpuReport[DeviceSummary]:
    """Plain ``nvidia-smi``: name (as the table shortens it), memory used/total, utilization, driver."""
    driver = _DRIVER.search(text)
    if not driver:
        raise TelemetryError("nvidia-smi table has no 'Driver Version:'")
    lines = text.splitlines()
    gpus: list[DeviceSummary] = []
    for n, line in enumerate(lines, 1):
        head = _TABLE_NAME.match(line)
        if not head:
            continue
        where = f"nvidia-smi table line {n + 1}"
        stats = _TABLE_STATS.match(lines[n]) if n < len(lines) else None
        if not stats:
            raise TelemetryError(f"{where}: expected temperature, power, memory and utilization after GPU "
                                 f"{head.group(1)}, got {(lines[n] if n < len(lines) else '').strip()!r}")
        gpus.append(DeviceSummary(
            index=int(head.group(1)), name=head.group(2).strip(),
            util_pct=_optional(stats["util"], "%", f"{where} utilization"),
            mem_used_mib=float(stats["used"]), mem_total_mib=float(stats["total"]),
            temperature_c=_optional(stats["temp"], "C", f"{where} temperature"),
            power_w=_optional(stats["power"], "W", f"{where} power"),
        ))
    return GpuReport(driver.group(1), tuple(gpus))


def parse_nvml_json(text: str) -> GpuReport[DeviceSummary]:
    """The NVML (pynvml) dump: one object or a list, ``driver``, ``name``, ``gpu_util``, memory in bytes.

    NVML's v1 memory info counts the driver's reserved memory as used: on the H100 capture ``mem_used``
    is nvidia-smi's used plus its 480 MiB reserved.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TelemetryError(f"NVML dump is not JSON: {exc}") from None
    entries = data if isinstance(data, list) else [data]
    gpus: list[DeviceSummary] = []
    drivers: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            drivers.add(str(entry["driver"]))
            gpus.append(DeviceSummary(
                index=index, name=str(entry["name"]), util_pct=float(entry["gpu_util"]),
                mem_used_mib=float(entry["mem_used"]) / _MIB, mem_total_mib=float(entry["mem_total"]) / _MIB,
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise TelemetryError(f"NVML dump entry {index}: missing or bad field {exc}") from None
    if len(drivers) != 1:
        raise TelemetryError(f"NVML dump names {len(drivers)} driver versions, expected one: {sorted(drivers)}")
    return GpuReport(drivers.pop(), tuple(gpus))
