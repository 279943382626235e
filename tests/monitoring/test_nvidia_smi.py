"""Every real capture (H100, H200) parses, its values match the files, and its formats agree."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.monitoring.captures import REPO, capture_dir, column, csv_rows, number
from vllm_gate.monitoring.gpu import TelemetryError
from vllm_gate.monitoring.nvidia_smi import (
    QUERY_ARGS,
    QUERY_FIELDS,
    parse_nvml_json,
    parse_query,
    parse_table,
    parse_xml,
)

CAPTURES = ["h100", "h200"]
QUERY_FILES = ["query_idle.csv", "query_idle_nounits.csv", "query_load_nounits.csv"]


@pytest.fixture(params=CAPTURES)
def capture(request: pytest.FixtureRequest) -> Path:
    return capture_dir(request.param)


def _xml(directory: Path) -> ET.Element:
    return ET.parse(directory / "nvidia-smi-q.xml").getroot()  # noqa: S314  (a capture in the repository)


def _xml_number(gpu: ET.Element, path: str) -> float:
    return number(gpu.findtext(path) or "")


def test_every_capture_file_is_known(capture: Path):
    """A new file in a capture must get a parser test here, not be silently ignored."""
    known = {*QUERY_FILES, "nvidia-smi-q.xml", "nvidia-smi.txt", "nvml.json", "tools.txt", "load.log", "README.md"}
    assert {p.name for p in capture.iterdir()} <= known


@pytest.mark.parametrize("name", QUERY_FILES)
def test_query_file_parses_and_matches(capture: Path, name: str):
    col = column(capture)
    rows = [r for r in csv_rows(capture / name) if r[0] != "index"]
    readings = parse_query((capture / name).read_text())
    assert len(readings) == len(rows) > 0
    for r, row in zip(readings, rows, strict=True):
        assert (r.index, r.uuid, r.name) == (int(row[col["index"]]), row[col["uuid"]], row[col["name"]])
        assert r.util_pct == number(row[col["utilization.gpu"]])
        assert r.mem_used_mib == number(row[col["memory.used"]])
        assert r.mem_free_mib == number(row[col["memory.free"]])
        assert r.mem_total_mib == number(row[col["memory.total"]])
        assert r.temperature_c == number(row[col["temperature.gpu"]])
        assert r.power_w == number(row[col["power.draw"]])
        assert r.xid is None  # nvidia-smi's query has no XID field


def test_xml_parses_and_matches(capture: Path):
    root = _xml(capture)
    report = parse_xml((capture / "nvidia-smi-q.xml").read_text())
    assert report.driver_version == root.findtext("driver_version") == "580.159.04"
    gpus = root.findall("gpu")
    assert len(report.gpus) == len(gpus) == 1
    r, gpu = report.gpus[0], gpus[0]
    assert (r.uuid, r.name) == (gpu.findtext("uuid"), gpu.findtext("product_name"))
    assert r.mem_total_mib == _xml_number(gpu, "fb_memory_usage/total")
    assert r.mem_reserved_mib == _xml_number(gpu, "fb_memory_usage/reserved")
    assert r.mem_used_mib == _xml_number(gpu, "fb_memory_usage/used")
    assert r.mem_free_mib == _xml_number(gpu, "fb_memory_usage/free")
    assert r.util_pct == _xml_number(gpu, "utilization/gpu_util")
    assert r.temperature_c == _xml_number(gpu, "temperature/gpu_temp")
    assert r.power_w == _xml_number(gpu, "gpu_power_readings/average_power_draw")


def test_table_parses_and_agrees_with_the_xml(capture: Path):
    """The table and the XML were taken at the same idle moment (same timestamp), so they must agree."""
    text = (capture / "nvidia-smi.txt").read_text()
    table, xml = parse_table(text), parse_xml((capture / "nvidia-smi-q.xml").read_text())
    assert table.driver_version == xml.driver_version
    assert len(table.gpus) == len(xml.gpus) == 1
    t, x = table.gpus[0], xml.gpus[0]
    assert x.name.startswith(t.name)  # the table may shorten long names
    assert (t.index, t.mem_used_mib, t.mem_total_mib, t.util_pct) == (x.index, x.mem_used_mib, x.mem_total_mib,
                                                                       x.util_pct)
    assert t.temperature_c == x.temperature_c
    assert x.power_w is not None
    assert t.power_w == pytest.approx(x.power_w, abs=10)  # whole watts, and power moves within the second
    assert re.search(rf"\b{t.mem_used_mib:.0f}MiB\s*/\s*{t.mem_total_mib:.0f}MiB", text)


def test_nvml_json_parses_and_agrees_with_the_load_query():
    directory = capture_dir("h100")
    raw = json.loads((directory / "nvml.json").read_text())
    report = parse_nvml_json((directory / "nvml.json").read_text())
    assert report.driver_version == raw["driver"]
    (g,) = report.gpus
    assert (g.name, g.util_pct) == (raw["name"], raw["gpu_util"])
    assert g.mem_used_mib == raw["mem_used"] / 2**20
    assert g.mem_total_mib == raw["mem_total"] / 2**20
    # Same load as query_load_nounits.csv; NVML's v1 "used" includes the driver's reserved memory.
    load = parse_query((directory / "query_load_nounits.csv").read_text())
    reserved = parse_xml((directory / "nvidia-smi-q.xml").read_text()).gpus[0].mem_reserved_mib
    assert reserved is not None
    assert {r.name for r in load} == {g.name}
    assert {r.mem_total_mib for r in load} == {g.mem_total_mib}
    assert {r.util_pct for r in load} == {g.util_pct}
    assert g.mem_used_mib == pytest.approx(load[0].mem_used_mib + reserved, abs=1)


def test_idle_formats_agree(capture: Path):
    """The two CSV formats and the XML, all idle, show the same card and memory."""
    (units,) = parse_query((capture / "query_idle.csv").read_text())
    (bare,) = parse_query((capture / "query_idle_nounits.csv").read_text())
    (xml,) = parse_xml((capture / "nvidia-smi-q.xml").read_text()).gpus
    for r in (bare, xml):
        assert (r.index, r.uuid, r.name, r.util_pct) == (units.index, units.uuid, units.name, units.util_pct)
        assert (r.mem_used_mib, r.mem_free_mib, r.mem_total_mib) == (
            units.mem_used_mib, units.mem_free_mib, units.mem_total_mib)
        # Taken moments apart: temperature and power drift a little.
        assert r.temperature_c == pytest.approx(units.temperature_c, abs=2)
        assert r.power_w == pytest.approx(units.power_w, abs=10)


def test_capacity_is_total_less_reserved_idle_and_under_load(capture: Path):
    (xml,) = parse_xml((capture / "nvidia-smi-q.xml").read_text()).gpus
    assert xml.mem_total_mib is not None
    assert xml.mem_reserved_mib is not None
    assert xml.capacity_mib == pytest.approx(xml.mem_total_mib - xml.mem_reserved_mib, abs=1)
    for r in parse_query((capture / "query_load_nounits.csv").read_text()):
        assert r.capacity_mib == pytest.approx(xml.capacity_mib, abs=1)  # preallocation moves free into used


def test_h200_preallocation_measurement():
    """The measured fact the memory margins cite: asked 0.9, used 0.896 of capacity; torch's total is idle free."""
    directory = capture_dir("h200")
    held = re.search(r"holding (\d+) MiB of (\d+) MiB \(fraction ([\d.]+)\)", (directory / "load.log").read_text())
    assert held
    (idle,) = parse_query((directory / "query_idle_nounits.csv").read_text())
    assert float(held[2]) == idle.mem_free_mib == idle.capacity_mib
    load = parse_query((directory / "query_load_nounits.csv").read_text())
    assert {round(r.mem_used_mib / r.capacity_mib, 3) for r in load} == {0.896}
    assert float(held[3]) == 0.9


def test_query_fields_are_what_the_captures_and_the_script_use(capture: Path):
    assert tuple(column(capture)) == QUERY_FIELDS
    script = (REPO / "scripts" / "capture-gpu-telemetry.sh").read_text()
    fields = re.search(r"^fields=(\S+)$", script, re.MULTILINE)
    assert fields
    assert tuple(fields[1].split(",")) == QUERY_FIELDS
    assert [*QUERY_ARGS] == ["nvidia-smi", f"--query-gpu={fields[1]}", "--format=csv,noheader,nounits"]


UUID = "GPU-89483916-4ee7-f953-0c96-036ee402eb02"


def test_unavailable_optional_fields_are_none():
    text = f"0, {UUID}, NVIDIA H100 80GB HBM3, 5, 1, 100, [N/A], 900, [Not Supported], [N/A]\n"
    (r,) = parse_query(text)
    assert (r.mem_total_mib, r.temperature_c, r.power_w) == (None, None, None)
    assert (r.util_pct, r.mem_used_mib, r.mem_free_mib) == (5, 100, 900)


def test_header_maps_columns_by_name():
    text = ("uuid, index, name, memory.free [MiB], memory.used [MiB], utilization.gpu [%]\n"
            f"{UUID}, 3, NVIDIA H100 80GB HBM3, 900 MiB, 100 MiB, 7 %\n")
    (r,) = parse_query(text)
    assert (r.index, r.uuid, r.util_pct, r.mem_used_mib, r.mem_free_mib) == (3, UUID, 7, 100, 900)
    assert (r.mem_total_mib, r.temperature_c, r.power_w) == (None, None, None)


@pytest.mark.parametrize(("bad_line", "cause"), [
    (f"0, {UUID}, NVIDIA H100 80GB HBM3, 5, 1, [N/A], 81559, 900, 37, 123.3", "memory.used: a required value is [N/A]"),
    (f"0, {UUID}, NVIDIA H100 80GB HBM3, 5, 1, 100, 81559", "7 fields, expected 10"),
    (f"0, {UUID}, NVIDIA H100 80GB HBM3, busy, 1, 100, 81559, 900, 37, 123.3", "'busy' is not a number"),
])
def test_malformed_query_line_is_named(bad_line: str, cause: str):
    good = f"0, {UUID}, NVIDIA H100 80GB HBM3, 5, 1, 100, 81559, 900, 37, 123.3"
    with pytest.raises(TelemetryError) as err:
        parse_query(f"{good}\n{bad_line}\n")
    assert f"line 2 {bad_line!r}" in str(err.value)
    assert cause in str(err.value)


def test_header_without_a_required_field_is_rejected():
    with pytest.raises(TelemetryError, match=r"lacks memory\.free"):
        parse_query(f"index, uuid, name, utilization.gpu [%], memory.used [MiB]\n0, {UUID}, H100, 1 %, 2 MiB\n")


def test_broken_xml_table_and_nvml_are_rejected():
    with pytest.raises(TelemetryError, match="not XML"):
        parse_xml("<nvidia_smi_log><gpu>")
    with pytest.raises(TelemetryError, match="no driver_version"):
        parse_xml("<nvidia_smi_log><gpu/></nvidia_smi_log>")
    with pytest.raises(TelemetryError, match=r"no <fb_memory_usage/used>"):
        parse_xml("<nvidia_smi_log><driver_version>1</driver_version><gpu id='x'><uuid>u</uuid>"
                  "<product_name>p</product_name><utilization><gpu_util>1 %</gpu_util></utilization>"
                  "</gpu></nvidia_smi_log>")
    table = capture_dir("h200").joinpath("nvidia-smi.txt").read_text().splitlines()
    stats = next(i for i, line in enumerate(table) if "MiB /" in line)
    with pytest.raises(TelemetryError, match=f"line {stats + 1}: expected temperature"):
        parse_table("\n".join(table[:stats] + table[stats + 1:]))
    with pytest.raises(TelemetryError, match="no 'Driver Version:'"):
        parse_table("\n".join(line for line in table if "Driver Version" not in line))
    with pytest.raises(TelemetryError, match="entry 0: missing or bad field 'mem_used'"):
        parse_nvml_json('{"driver": "1", "name": "n", "gpu_util": 1, "mem_total": 1}')
