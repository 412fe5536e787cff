"""Hardware topology: a networkx graph of hosts, CPUs, PCIe switches, GPUs, NVSwitches and NICs.

Sources: NCCL topology XML (``NCCL_TOPO_DUMP_FILE``), ``nvidia-smi topo -m`` text, the JSON this package
writes for the store, or ``default_topology`` when none is given. See ``model`` for node ids and
attributes, ``docs/topology.md`` for the whole contract.
"""

from kat_gui.topology.anomalies import topology_anomalies
from kat_gui.topology.components import component_node, component_targets
from kat_gui.topology.default import default_topology
from kat_gui.topology.layout import layout
from kat_gui.topology.load import FORMATS, load_topology, sniff_topology
from kat_gui.topology.merge import load_topologies, merge_hosts
from kat_gui.topology.model import (
    EDGE_KINDS,
    NODE_KINDS,
    TOPOLOGY_VERSION,
    edge_id,
    gpu_nodes,
    gpu_of_rank,
    parse_edge_id,
)
from kat_gui.topology.serialize import from_json, to_json

__all__ = [
    "EDGE_KINDS",
    "FORMATS",
    "NODE_KINDS",
    "TOPOLOGY_VERSION",
    "component_node",
    "component_targets",
    "default_topology",
    "edge_id",
    "from_json",
    "gpu_nodes",
    "gpu_of_rank",
    "layout",
    "load_topologies",
    "load_topology",
    "merge_hosts",
    "parse_edge_id",
    "sniff_topology",
    "to_json",
    "topology_anomalies",
]
