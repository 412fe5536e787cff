"""Reading a topology file: sniffing its format and dispatching to the right parser."""

from __future__ import annotations

import json
import os
import re

import networkx as nx

from kat_gui.errors import KatInputError
from kat_gui.topology import nvsmi
from kat_gui.topology.nccl_xml import parse_nccl_topo_xml, parse_xml_root
from kat_gui.topology.serialize import JSON_FORMAT, from_json

# A topology file is a few KiB; anything far larger is not one (and is not worth reading whole).
MAX_TOPOLOGY_BYTES = 16 * 1024 * 1024

_PROLOG_RE = re.compile(r"<\?.*?\?>|<!--.*?-->", re.DOTALL)
_ROOT_RE = re.compile(r"<\s*(![A-Za-z]+|[A-Za-z_][\w.:-]*)")

FORMATS = ("nccl_topo_xml", "nccl_graph_xml", "nvidia_smi_topo", "kat_topology_json")


def read_topology_text(path: str | os.PathLike) -> str:
    """The file's text; KatInputError when it is missing, empty, too large, binary or not UTF-8."""
    try:
        size = os.path.getsize(path)
        if size > MAX_TOPOLOGY_BYTES:
            raise KatInputError(
                path, f"{size} bytes is far too large for a topology file (limit {MAX_TOPOLOGY_BYTES})"
            )
        with open(path, "rb") as f:
            raw = f.read()
    except KatInputError:
        raise
    except IsADirectoryError:
        raise KatInputError(path, "is a directory, expected a topology file") from None
    except OSError as exc:
        raise KatInputError(path, f"cannot read topology file: {exc.strerror or exc}") from None
    if not raw.strip():
        raise KatInputError(path, "topology file is empty")
    if b"\x00" in raw[:65536]:
        raise KatInputError(path, "binary file, expected NCCL topology XML or `nvidia-smi topo -m` text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KatInputError(path, f"not UTF-8 text (byte {exc.start}): expected a topology file") from None
    return text


def sniff_text(text: str) -> str | None:
    head = text.lstrip()
    if head.startswith("<"):
        # The root tag, past any XML declaration and comments (the parser vets DTDs later).
        m = _ROOT_RE.search(_PROLOG_RE.sub("", head[:65536]))
        if m is None:
            return None
        tag = m.group(1)
        if tag == "system":
            return "nccl_topo_xml"
        if tag == "graphs":
            return "nccl_graph_xml"
        if tag.startswith("!"):
            return "nccl_topo_xml"  # DOCTYPE: let the XML parser refuse it with its own message
        return None
    if head.startswith("{"):
        return "kat_topology_json" if JSON_FORMAT in head[:4096] else None
    if nvsmi.find_header(nvsmi.clean_lines(text)) is not None:
        return "nvidia_smi_topo"
    return None


def sniff_topology(path: str | os.PathLike) -> str:
    """One of FORMATS; KatInputError when the file is unreadable or none of them."""
    fmt = sniff_text(read_topology_text(path))
    if fmt is None:
        raise KatInputError(
            path,
            "not a topology file: expected NCCL topology XML (NCCL_TOPO_DUMP_FILE) or `nvidia-smi topo -m` output",
        )
    return fmt


def load_topology(path: str | os.PathLike) -> nx.Graph:
    """Parse any supported topology file into the hardware graph (see ``kat_gui.topology.model``)."""
    text = read_topology_text(path)
    fmt = sniff_text(text)
    if fmt in ("nccl_topo_xml", "nccl_graph_xml"):
        return parse_nccl_topo_xml(text, path)
    if fmt == "nvidia_smi_topo":
        return nvsmi.parse_nvsmi_topo(text, path)
    if fmt == "kat_topology_json":
        try:
            return from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise KatInputError(path, f"unreadable KAT topology JSON: {exc}") from None
    if text.lstrip().startswith("<"):
        parse_xml_root(text, path)  # raises on DTDs and malformed XML with a precise message
        raise KatInputError(path, "XML that is not an NCCL topology dump (expected root <system>)")
    raise KatInputError(
        path,
        "not a topology file: expected NCCL topology XML (NCCL_TOPO_DUMP_FILE) or `nvidia-smi topo -m` output",
    )
