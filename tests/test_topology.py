"""Hardware topology: parsers (real NCCL XML, nvidia-smi fixtures), anomalies, defaults, JSON, mapping, layout."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from kat_gui.errors import KatInputError
from kat_gui.topology import (
    component_node,
    default_topology,
    edge_id,
    from_json,
    layout,
    load_topologies,
    load_topology,
    sniff_topology,
    to_json,
    topology_anomalies,
)

FIXTURES = Path(__file__).parent / "fixtures" / "topology"


@pytest.fixture(scope="module")
def xml_dir(shared_data: Path) -> Path:
    return shared_data / "topology" / "nccl_xml"


def kinds(g: nx.Graph) -> Counter:
    return Counter(d["kind"] for _, d in g.nodes(data=True))


def nv_counts(g: nx.Graph) -> Counter:
    return Counter(d["count"] for _, _, d in g.edges(data=True) if d["kind"] == "nvlink")


# ---------------------------------------------------------------- NCCL XML (real files)


def test_ncv4_has_four_gpus_nvlinks_and_a_nic(xml_dir: Path):
    path = xml_dir / "azure_ncv4-topo.xml"
    assert sniff_topology(path) == "nccl_topo_xml"
    g = load_topology(path)
    assert kinds(g)["gpu"] == 4 and kinds(g)["cpu"] == 4 and kinds(g)["nic"] == 1
    assert [g.nodes[f"GPU{r}"]["rank"] for r in range(4)] == [0, 1, 2, 3]
    assert g.graph["ranks_known"] is True
    assert nv_counts(g) == Counter({12: 4})
    # each GPU sits on its own NUMA node, as in the file
    assert component_node(g, "cpu", 2) == ["CPU host0 numa2"]
    nic = g.nodes["NIC eth0"]
    assert nic["gdr"] == 0 and nic["speed_mbps"] == 100000
    assert g.edges["NIC eth0", "fabric"]["kind"] == "net"
    assert g.nodes["GPU0"]["sm"] == 80 and g.edges["GPU0", "GPU0"]["nvlink_gen"] == 3
    assert any("own GPU's bus id" in n for n in g.graph["notes"])


@pytest.mark.parametrize(
    ("name", "gpus", "nics", "switches", "cpus"),
    [
        ("azure_ndv2-topo.xml", 8, 1, 0, 2),
        ("azure_ndv4-topo.xml", 8, 8, 4, 4),
        ("azure_ndv5-topo.xml", 8, 8, 8, 2),
    ],
)
def test_pci_only_xml_files_treat_display_class_devices_as_gpus(xml_dir, name, gpus, nics, switches, cpus):
    g = load_topology(xml_dir / name)
    k = kinds(g)
    assert (k["gpu"], k["nic"], k["pci_switch"], k["cpu"]) == (gpus, nics, switches, cpus)
    assert g.graph["ranks_known"] is False
    assert any("bus-id order" in n for n in g.graph["notes"])
    # numbered in bus order: GPU0 has the lowest bus id
    busids = [g.nodes[f"GPU{r}"]["busid"] for r in range(gpus)]
    assert busids == sorted(busids)
    widths = {d.get("link_width") for _, _, d in g.edges(data=True) if d["kind"] == "pcie"}
    assert widths == {16}
    assert topology_anomalies(g) == []


def test_ndv4_gpu_and_its_nics_share_a_pcie_switch(xml_dir: Path):
    g = load_topology(xml_dir / "azure_ndv4-topo.xml")
    # GPU0 is bus 0001, under switch ffff:ff:02.0 on NUMA 1 with NICs 0101 and 0102
    assert g.nodes["GPU0"]["parent"] == "PCIe host0 ffff:ff:02.0"
    assert component_node(g, "cpu", 0) == ["CPU host0 numa1"]
    assert component_node(g, "nic", 0) == ["NIC 0101:00:00.0", "NIC 0102:00:00.0"]
    assert component_node(g, "pcie", 0) == [edge_id("GPU0", "PCIe host0 ffff:ff:02.0")]


def test_graph_dump_is_rejected_with_a_clear_message(xml_dir: Path):
    path = xml_dir / "azure_ncv4-graph.xml"
    assert sniff_topology(path) == "nccl_graph_xml"
    with pytest.raises(KatInputError) as exc:
        load_topology(path)
    msg = str(exc.value)
    assert str(path) in msg and "graph dump" in msg and "NCCL_TOPO_DUMP_FILE" in msg


NVSWITCH_XML = """<system version="1">
  <cpu numaid="0" affinity="ffff" arch="x86_64" vendor="GenuineIntel">
    <pci busid="0000:10:00.0" class="0x060400" link_speed="32.0 GT/s PCIe" link_width="16">
      <pci busid="0000:18:00.0" class="0x030200" link_speed="32.0 GT/s PCIe" link_width="16">
        <gpu dev="0" sm="90" rank="0" gdr="1">
          <nvlink target="0000:05:00.0" count="4" tclass="0x068000"/>
          <nvlink target="0000:06:00.0" count="5" tclass="0x068000"/>
        </gpu>
      </pci>
      <pci busid="0000:19:00.0" class="0x030200" link_speed="32.0 GT/s PCIe" link_width="8">
        <gpu dev="1" sm="90" rank="1" gdr="1">
          <nvlink target="0000:05:00.0" count="4" tclass="0x068000"/>
          <nvlink target="0000:06:00.0" count="5" tclass="0x068000"/>
        </gpu>
      </pci>
      <pci busid="0000:1a:00.0" class="0x030200" link_speed="32.0 GT/s PCIe" link_width="16">
        <gpu dev="2" sm="90" rank="2" gdr="1">
          <nvlink target="0000:05:00.0" count="4" tclass="0x068000"/>
          <nvlink target="0000:06:00.0" count="3" tclass="0x068000"/>
        </gpu>
      </pci>
      <pci busid="0000:1b:00.0" class="0x030200" link_speed="32.0 GT/s PCIe" link_width="16">
        <gpu dev="3" sm="90" rank="3" gdr="1"/>
      </pci>
      <pci busid="0000:1c:00.0" class="0x020700" link_speed="32.0 GT/s PCIe" link_width="16">
        <nic><net name="mlx5_0" dev="0" speed="400000" port="1" gdr="1"/></nic>
      </pci>
      <pci busid="0000:1d:00.0" class="0x020700" link_speed="32.0 GT/s PCIe" link_width="16">
        <nic><net name="mlx5_1" dev="1" speed="400000" port="1" gdr="0"/></nic>
      </pci>
    </pci>
    <pci busid="0000:02:00.0" class="0x030000" vendor="0x1a03" link_speed="2.5 GT/s PCIe" link_width="1"/>
  </cpu>
</system>
"""


def test_nvswitch_xml_builds_switch_edges_and_finds_every_anomaly_kind(tmp_path: Path):
    path = tmp_path / "topo.xml"
    path.write_text(NVSWITCH_XML)
    g = load_topology(path)
    assert kinds(g)["nvswitch"] == 2
    assert kinds(g)["gpu"] == 4  # the BMC's VGA device (vendor 0x1a03) is not a GPU
    assert g.edges["GPU0", "NVSwitch0"]["kind"] == "nvswitch" and g.edges["GPU0", "NVSwitch1"]["count"] == 5
    assert g.edges["GPU0", "NVSwitch0"]["per_link_gbyte_s"] == 25.0
    # nvlink + two ranks joined only through NVSwitches -> their NVSwitch edges
    assert sorted(component_node(g, "nvlink", ranks=[0, 1])) == sorted(
        edge_id(a, b) for a in ("GPU0", "GPU1") for b in ("NVSwitch0", "NVSwitch1")
    )
    found = {(a["component"], a["component_id"]) for a in topology_anomalies(g)}
    assert found == {
        # 3 links to NVSwitch1 where the siblings have 5; switch 0 legitimately has 4 everywhere
        ("nvlink", edge_id("GPU2", "NVSwitch1")),
        ("nvlink", "GPU3"),  # no NVLink at all
        ("pcie", edge_id("GPU1", "PCIe host0 0000:10:00.0")),  # x8 among x16
        ("nic", "NIC mlx5_1"),  # gdr=0 where mlx5_0 has 1
    }
    pcie = next(a for a in topology_anomalies(g) if a["component"] == "pcie")
    assert pcie["ranks"] == [1] and pcie["evidence"]["link_width"] == 8
    assert pcie["evidence"]["sibling_link_width"] == 16


def test_multi_host_xml_splits_hosts_by_host_hash(tmp_path: Path):
    text = """<system version="1">
      <cpu host_hash="0xaaa" numaid="0"><pci busid="0000:01:00.0" class="0x030200">
        <gpu dev="0" rank="0"/></pci><nic><net name="mlx5_0" gdr="1"/></nic></cpu>
      <cpu host_hash="0xbbb" numaid="0"><pci busid="0000:01:00.0" class="0x030200">
        <gpu dev="0" rank="1"/></pci><nic><net name="mlx5_0" gdr="1"/></nic></cpu>
    </system>"""
    path = tmp_path / "two.xml"
    path.write_text(text)
    g = load_topology(path)
    assert g.graph["hosts"] == ["host0", "host1"]
    assert g.nodes["GPU1"]["host"] == "host1" and g.nodes["GPU1"]["device"] == 0
    assert component_node(g, "nic", host="node1") == ["NIC host1 mlx5_0"]
    assert component_node(g, "nic", 1) == ["NIC host1 mlx5_0"]


@pytest.mark.parametrize(
    "decl",
    [
        '<!DOCTYPE system [<!ENTITY x "yyyyyyyyyy">]>',
        '<!DOCTYPE system SYSTEM "http://example.invalid/evil.dtd">',
        '<!doctype system [<!ENTITY a SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_xml_with_doctype_or_entity_is_refused(tmp_path: Path, decl: str):
    path = tmp_path / "evil.xml"
    path.write_text(f'<?xml version="1.0"?>\n{decl}\n<system><cpu numaid="0"/></system>\n')
    with pytest.raises(KatInputError, match="DOCTYPE") as exc:
        load_topology(path)
    assert str(path) in str(exc.value)


def test_malformed_and_foreign_xml_are_refused(tmp_path: Path):
    bad = tmp_path / "bad.xml"
    bad.write_text('<system><cpu numaid="0"><pci busid="x"></cpu></system>')
    with pytest.raises(KatInputError, match="not well-formed"):
        load_topology(bad)
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>")
    with pytest.raises(KatInputError, match="not an NCCL topology"):
        load_topology(other)


# ---------------------------------------------------------------- nvidia-smi topo -m fixtures


@pytest.mark.parametrize(
    ("name", "gpus", "nics", "nv", "cpus", "switches"),
    [
        ("h100_8gpu_nv18_nics.txt", 8, 10, {18: 28}, 2, 9),
        ("h100_8gpu_degraded_nv16.txt", 8, 8, {18: 27, 16: 1}, 2, 8),
        ("pcie_4gpu_old_driver_soc.txt", 4, 2, {}, 2, 2),
        ("pcie_2gpu.txt", 2, 0, {}, 1, 0),
        ("ansi_indented_env_dump.txt", 4, 2, {12: 6}, 2, 2),
    ],
)
def test_nvidia_smi_fixtures_parse(name, gpus, nics, nv, cpus, switches):
    path = FIXTURES / name
    assert sniff_topology(path) == "nvidia_smi_topo"
    g = load_topology(path)
    k = kinds(g)
    assert (k["gpu"], k["nic"], k["cpu"], k["pci_switch"]) == (gpus, nics, cpus, switches)
    assert nv_counts(g) == Counter(nv)
    assert g.graph["ranks_known"] is False
    assert [g.nodes[f"GPU{i}"]["device"] for i in range(gpus)] == list(range(gpus))


def test_nic_legend_names_and_pcie_relations():
    g = load_topology(FIXTURES / "h100_8gpu_nv18_nics.txt")
    assert g.nodes["NIC mlx5_3"]["alias"] == "NIC3"
    # NIC3 is PXB with GPU1: same (inferred) switch; the dual-port NIC1/NIC2 share a PIX switch of their own
    assert g.nodes["NIC mlx5_3"]["parent"] == g.nodes["GPU1"]["parent"]
    sw = g.nodes["NIC mlx5_1"]["parent"]
    assert g.nodes[sw]["relation"] == "PIX" and g.nodes["NIC mlx5_2"]["parent"] == sw
    assert component_node(g, "nic", 1) == ["NIC mlx5_3"]
    assert component_node(g, "cpu", 5) == ["CPU host0 numa1"]
    assert ["GPU0", "NIC mlx5_0", "PXB"] in g.graph["relations"]
    assert g.nodes["CPU host0 numa1"]["affinity"] == "56-111,168-223"


def test_old_driver_soc_matrix_uses_cpu_affinity_and_mlx_columns():
    g = load_topology(FIXTURES / "pcie_4gpu_old_driver_soc.txt")
    assert sorted(n for n, d in g.nodes(data=True) if d["kind"] == "nic") == ["NIC mlx5_0", "NIC mlx5_1"]
    assert component_node(g, "cpu", 3) == ["CPU host0 numa1"]
    assert g.nodes["NIC mlx5_1"]["parent"] == "CPU host0 numa1"  # PHB to GPU2/3: on their host bridge
    assert g.nodes["GPU0"]["parent"] == g.nodes["GPU1"]["parent"] != g.nodes["GPU2"]["parent"]
    assert g.edges["CPU host0 numa0", "CPU host0 numa1"]["kind"] == "sys"


def test_ansi_header_with_lost_escape_byte_still_parses(tmp_path: Path):
    text = (FIXTURES / "ansi_indented_env_dump.txt").read_text().replace("\x1b", "")
    assert "[4m" in text
    path = tmp_path / "pasted.txt"
    path.write_text(text)
    g = load_topology(path)
    assert kinds(g)["gpu"] == 4 and nv_counts(g) == Counter({12: 6})


def test_degraded_fixture_yields_exactly_one_nvlink_anomaly_on_the_right_pair():
    g = load_topology(FIXTURES / "h100_8gpu_degraded_nv16.txt")
    anomalies = topology_anomalies(g)
    assert len(anomalies) == 1
    a = anomalies[0]
    assert a["component"] == "nvlink" and a["ranks"] == [2, 5]
    assert a["component_id"] == edge_id("GPU2", "GPU5")
    assert a["evidence"]["link_count"] == 16 and a["evidence"]["sibling_link_count"] == 18
    assert "GPU2" in a["summary"] and "GPU5" in a["summary"]
    assert component_node(g, "nvlink", ranks=a["ranks"]) == [a["component_id"]]


def test_healthy_fixtures_have_no_anomalies():
    for name in ("h100_8gpu_nv18_nics.txt", "ansi_indented_env_dump.txt", "pcie_4gpu_old_driver_soc.txt"):
        assert topology_anomalies(load_topology(FIXTURES / name)) == [], name


def test_short_row_is_reported_with_its_line(tmp_path: Path):
    lines = (FIXTURES / "pcie_2gpu.txt").read_text().splitlines()
    lines[2] = "GPU1\tPHB"
    path = tmp_path / "cut.txt"
    path.write_text("\n".join(lines))
    with pytest.raises(KatInputError, match="line 3: row GPU1 has 1 cells, expected 2"):
        load_topology(path)


# ---------------------------------------------------------------- unreadable input


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
        (b"hello world\nthis is not a topology\n", "not a topology file"),
        (b"\xff\xfe\xfa garbage", "UTF-8"),
        (b'{"some": "json"}', "not a topology file"),
    ],
)
def test_unreadable_files_raise_kat_input_error_naming_the_file(tmp_path: Path, content: bytes, match: str):
    path = tmp_path / "topo.bin"
    path.write_bytes(content)
    with pytest.raises(KatInputError, match=match) as exc:
        load_topology(path)
    assert exc.value.path == str(path) and str(path) in str(exc.value)
    with pytest.raises(KatInputError):
        sniff_topology(path)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(KatInputError, match="cannot read"):
        load_topology(tmp_path / "nope.xml")
    with pytest.raises(KatInputError, match="directory"):
        load_topology(tmp_path)


# ---------------------------------------------------------------- default topology


def test_default_topology_eight_ranks_one_host():
    g = default_topology(list(range(8)), None, {3: "NVIDIA H100 80GB HBM3"})
    k = kinds(g)
    assert g.graph["inferred"] is True
    assert (k["host"], k["cpu"], k["gpu"], k["pci_switch"], k["nvswitch"], k["nic"]) == (1, 1, 8, 4, 1, 0)
    assert all(g.edges[f"GPU{r}", "NVSwitch0"]["kind"] == "nvswitch" for r in range(8))
    assert g.nodes["GPU2"]["parent"] == g.nodes["GPU3"]["parent"] != g.nodes["GPU4"]["parent"]
    assert "H100" in g.nodes["GPU3"]["label"]
    assert topology_anomalies(g) == []


def test_default_topology_sixteen_ranks_two_hosts_with_nics():
    g = default_topology(list(range(16)), None, None)
    k = kinds(g)
    assert (k["host"], k["gpu"], k["nvswitch"], k["nic"], k["fabric"]) == (2, 16, 2, 2, 1)
    assert g.nodes["GPU9"]["host"] == "host1" and g.nodes["GPU9"]["device"] == 1
    assert not g.has_edge("GPU7", "NVSwitch1")
    assert component_node(g, "nic", host="node1") == ["NIC host1 nic0"]
    assert component_node(g, "nic", 12) == ["NIC host1 nic0"]
    assert nx.is_connected(g)


def test_default_topology_explicit_ranks_per_host():
    g = default_topology([0, 1, 2, 3], ranks_per_host=2, gpu_names=None)
    assert [g.nodes[f"GPU{r}"]["host"] for r in range(4)] == ["host0", "host0", "host1", "host1"]
    assert kinds(g)["nic"] == 2


# ---------------------------------------------------------------- JSON, mapping, layout


def _assert_same_graph(a: nx.Graph, b: nx.Graph) -> None:
    assert a.graph == b.graph
    assert dict(a.nodes(data=True)) == dict(b.nodes(data=True))
    ea = {frozenset((u, v)): d for u, v, d in a.edges(data=True)}
    eb = {frozenset((u, v)): d for u, v, d in b.edges(data=True)}
    assert ea == eb


@pytest.mark.parametrize("name", ["h100_8gpu_degraded_nv16.txt", "pcie_4gpu_old_driver_soc.txt"])
def test_json_round_trip_fixture(name: str, tmp_path: Path):
    g = load_topology(FIXTURES / name)
    obj = json.loads(json.dumps(to_json(g)))
    assert obj["format"] == "kat.topology" and obj["version"] == 1
    _assert_same_graph(g, from_json(obj))
    # the stored JSON is itself a loadable topology file
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(obj))
    assert sniff_topology(path) == "kat_topology_json"
    _assert_same_graph(g, load_topology(path))


def test_json_round_trip_xml_and_default(xml_dir: Path):
    for g in (load_topology(xml_dir / "azure_ncv4-topo.xml"), default_topology(list(range(16)))):
        _assert_same_graph(g, from_json(json.loads(json.dumps(to_json(g)))))


def test_from_json_refuses_other_formats_and_newer_versions():
    with pytest.raises(ValueError):
        from_json({"format": "other"})
    obj = to_json(default_topology([0, 1]))
    obj["version"] = 99
    with pytest.raises(ValueError, match="newer"):
        from_json(obj)


def test_component_node_mapping_for_every_component_class():
    g = default_topology(list(range(16)))
    assert component_node(g, "gpu", 3) == ["GPU3"]
    assert component_node(g, "hbm", 11) == ["GPU11"]
    assert component_node(g, "pcie", 3) == [edge_id("GPU3", "PCIe host0 sw1")]
    assert component_node(g, "cpu", 3) == ["CPU host0 numa0"]
    assert component_node(g, "cpu", 12) == ["CPU host1 numa0"]
    assert component_node(g, "nic", host=1) == ["NIC host1 nic0"]
    assert component_node(g, "unknown", 3) == []
    assert component_node(g, "gpu", 99) == []
    # nvlink between two GPUs joined by the host's NVSwitch: their switch edges
    assert component_node(g, "nvlink", ranks=[2, 3]) == [
        edge_id("GPU2", "NVSwitch0"),
        edge_id("GPU3", "NVSwitch0"),
    ]
    assert component_node(g, "nvlink", 3) == [edge_id("GPU3", "NVSwitch0")]
    # a component_id naming a node or edge wins
    assert component_node(g, "gpu", component_id="GPU5") == ["GPU5"]
    assert component_node(g, "nvlink", component_id=edge_id("GPU5", "NVSwitch0")) == [
        edge_id("GPU5", "NVSwitch0")
    ]
    # no ranks: the whole class (optionally on one host)
    assert len(component_node(g, "gpu", host="host1")) == 8
    assert len(component_node(g, "nic")) == 2
    # direct NVLink pair in an nvidia-smi matrix
    smi = load_topology(FIXTURES / "h100_8gpu_nv18_nics.txt")
    assert component_node(smi, "nvlink", ranks=[2, 3]) == [edge_id("GPU2", "GPU3")]
    assert len(component_node(smi, "nvlink", 3)) == 7


@pytest.mark.parametrize(
    "make",
    [
        lambda: default_topology(list(range(16))),
        lambda: load_topology(FIXTURES / "h100_8gpu_nv18_nics.txt"),
        lambda: load_topology(FIXTURES / "pcie_4gpu_old_driver_soc.txt"),
    ],
)
def test_layout_positions_every_node_and_gpus_of_a_host_share_a_row(make):
    g = make()
    pos = layout(g)
    assert set(pos) == set(g.nodes)
    assert pos == layout(g)  # deterministic
    for host in g.graph["hosts"]:
        gpus = [n for n, d in g.nodes(data=True) if d["kind"] == "gpu" and d["host"] == host]
        assert len({pos[n][1] for n in gpus}) == 1
        assert len({pos[n][0] for n in gpus}) == len(gpus)
        cpu_y = {pos[n][1] for n, d in g.nodes(data=True) if d["kind"] == "cpu" and d["host"] == host}
        assert max(cpu_y) < pos[gpus[0]][1]  # CPUs above GPUs
        assert pos[host][1] < min(cpu_y)
    # no two nodes on top of each other
    assert len(set(pos.values())) == len(pos)


def test_layout_puts_hosts_side_by_side():
    g = default_topology(list(range(16)))
    pos = layout(g)
    host0 = max(pos[f"GPU{r}"][0] for r in range(8))
    host1 = min(pos[f"GPU{r}"][0] for r in range(8, 16))
    assert host0 < host1
    assert pos["NVSwitch0"][1] > pos["GPU0"][1]


# ---------------------------------------------------------------- one file per host


def test_one_nvidia_smi_file_per_host_merges_into_a_multi_host_graph():
    g = load_topologies([FIXTURES / "h100_8gpu_nv18_nics.txt", FIXTURES / "h100_8gpu_degraded_nv16.txt"])
    assert g.graph["hosts"] == ["host0", "host1"]
    assert kinds(g)["gpu"] == 16 and kinds(g)["nic"] == 18 and kinds(g)["fabric"] == 1
    assert g.nodes["GPU10"]["host"] == "host1" and g.nodes["GPU10"]["device"] == 2
    assert g.nodes["GPU10"]["parent"] == "PCIe host1 sw2"
    assert component_node(g, "nic", 10) == ["NIC host1 mlx5_2"]
    assert len(component_node(g, "nic", host="node1")) == 8
    assert component_node(g, "cpu", 13) == ["CPU host1 numa1"]
    assert not g.has_edge("GPU7", "GPU8")  # no NVLink across hosts
    assert nx.is_connected(g)  # through the NICs and the fabric
    (a,) = topology_anomalies(g)
    assert a["ranks"] == [10, 13] and a["component_id"] == edge_id("GPU10", "GPU13")
    pos = layout(g)
    assert max(pos[f"GPU{r}"][0] for r in range(8)) < min(pos[f"GPU{r}"][0] for r in range(8, 16))
    _assert_same_graph(g, from_json(json.loads(json.dumps(to_json(g)))))


def test_merging_files_that_name_the_same_rank_is_refused(tmp_path: Path):
    path = tmp_path / "t.xml"
    path.write_text(NVSWITCH_XML)
    with pytest.raises(KatInputError, match="rank 0 appears in two"):
        load_topologies([path, path])
