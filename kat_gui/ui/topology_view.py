"""The hardware graph as boxes and links (QGraphicsScene), implicated components coloured by severity.

Positions come from ``kat_gui.topology.layout`` (abstract units, one GPU slot = 1.0, y downward). Clicking a
GPU filters the timeline to its rank; clicking a switch, CPU, host or NIC filters to the GPUs below it; clicking
a link filters to the GPUs at its ends. Click the same item again (or "show all ranks") to clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import networkx as nx
from PySide6 import QtCore, QtGui, QtWidgets

from kat_gui.ui.run_model import RunModel, esc
from kat_gui.ui.scale import LARGE_RUN_RANKS
from kat_gui.ui.turns import next_turn

BUILD_LATER_MS = 30
HOSTS_PER_TURN = 16  # a large run's host grid is built this many hosts per event-loop turn

SCALE = 120.0
COMPACT_HOSTS = 8  # more hosts than this: hosts as boxes with their GPUs collapsed into a strip
COMPACT_COLS = 4
NODE_W = {"gpu": 88, "nvswitch": 96, "pci_switch": 84, "cpu": 92, "host": 100, "nic": 84, "fabric": 110}
NODE_H = 34
KIND_FILL = {
    "gpu": "#E3ECF6",
    "nvswitch": "#EDE4F3",
    "pci_switch": "#EEEEEE",
    "cpu": "#E6F2E3",
    "host": "#F7F7F7",
    "nic": "#F6EEDF",
    "fabric": "#F6EEDF",
}
EDGE_COLOR = {
    "nvlink": "#9467BD",
    "nvswitch": "#9467BD",
    "pcie": "#8C8C8C",
    "net": "#C08A3E",
    "host": "#BBBBBB",
    "sys": "#6A9F5B",
    "node": "#BBBBBB",
}


def severity_color(conf: float) -> QtGui.QColor:
    """Red for confident findings, orange for medium, yellow for weak ones."""
    if conf >= 0.7:
        return QtGui.QColor("#D62728")
    if conf >= 0.4:
        return QtGui.QColor("#FF7F0E")
    return QtGui.QColor("#E6C229")


def ranks_under(g: nx.Graph, node: str) -> set[int]:
    """Ranks of the GPUs a node stands for: itself (GPU), its descendants on the ``parent`` chain, or the
    GPUs linked to it (NVSwitch)."""
    kind = g.nodes[node].get("kind")
    if kind == "gpu":
        return {int(g.nodes[node]["rank"])}
    out = set()
    for n, d in g.nodes(data=True):
        if d.get("kind") != "gpu":
            continue
        cur, seen = d.get("parent"), set()
        while cur is not None and cur not in seen:
            if cur == node:
                out.add(int(d["rank"]))
                break
            seen.add(cur)
            cur = g.nodes[cur].get("parent") if cur in g else None
        if d.get("host") == node or g.has_edge(n, node) and kind in ("nvswitch", "nic"):
            out.add(int(d["rank"]))
    return out


class _NodeItem(QtWidgets.QGraphicsRectItem):
    def __init__(self, node: str, rect: QtCore.QRectF):
        super().__init__(rect)
        self.node = node
        self.setAcceptHoverEvents(True)
        self.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)


class _EdgeItem(QtWidgets.QGraphicsLineItem):
    def __init__(self, u: str, v: str, line: QtCore.QLineF):
        super().__init__(line)
        self.edge = (u, v)
        self.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)

    def shape(self) -> QtGui.QPainterPath:
        # A wider hit area than the drawn line, so links are easy to click.
        path = QtGui.QPainterPath()
        path.moveTo(self.line().p1())
        path.lineTo(self.line().p2())
        stroker = QtGui.QPainterPathStroker()
        stroker.setWidth(10)
        return stroker.createStroke(path)


class TopologyView(QtWidgets.QWidget):
    """Emits ``ranksSelected(list)`` (empty list = clear the filter)."""

    ranksSelected = QtCore.Signal(list)

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.run = model
        self.graph: nx.Graph | None = model.graph
        self.node_items: dict[str, _NodeItem] = {}
        self.edge_items: dict[tuple[str, str], _EdgeItem] = {}
        self.active: str | tuple | None = None
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        head = QtWidgets.QHBoxLayout()
        self.title = QtWidgets.QLabel()
        self.title.setWordWrap(True)
        head.addWidget(self.title, 1)
        self.clear_btn = QtWidgets.QPushButton("show all ranks")
        self.clear_btn.setEnabled(False)
        self.clear_btn.clicked.connect(self.clear)
        head.addWidget(self.clear_btn)
        lay.addLayout(head)
        self.scene = QtWidgets.QGraphicsScene(self)
        self.view = QtWidgets.QGraphicsView(self.scene)
        self.view.setRenderHints(
            QtGui.QPainter.RenderHint.Antialiasing | QtGui.QPainter.RenderHint.TextAntialiasing
        )
        self.view.setBackgroundBrush(QtGui.QColor("white"))
        self.view.mousePressEvent = self._press  # type: ignore[method-assign]
        lay.addWidget(self.view, 1)
        self.severity = self._severity()
        # The title now, with the tab: a label's new text re-lays out and repaints the whole tab
        self.title.setText(self._title_html())
        self._steps: Iterator[None] | None = None  # the compact layout's build, HOSTS_PER_TURN at a time
        self._later = len(model.ranks) > LARGE_RUN_RANKS
        if self._later:
            # hundreds of GPU cells: built a little later, not in the event-loop turn that builds the run's tab
            # (at 1,024 ranks that turn held the GUI thread ~100 ms); a zero delay would run it before the
            # window's pending timers and paints, in effect the same turn
            QtCore.QTimer.singleShot(BUILD_LATER_MS, self, self._build)
        else:
            self._build()

    def building(self) -> bool:
        """True until every item is in the scene (a large run's topology is built in later turns)."""
        return self._later or self._steps is not None

    def _step(self) -> None:
        if self._steps is None:
            return
        try:
            next(self._steps)
        except StopIteration:
            self._steps = None
            self.fit()
            return
        next_turn(self, self._step)

    # ------------------------------------------------------------------ model

    def _severity(self) -> dict:
        """node id or sorted edge tuple -> highest confidence of a finding naming it."""
        out: dict = {}
        if self.graph is None:
            return out
        from kat_gui.topology import parse_edge_id

        for f in self.run.findings:
            conf = float(f.get("confidence", 0.0))
            for nid in f.get("nodes", []) or []:
                e = parse_edge_id(str(nid))
                key = tuple(sorted(e)) if e is not None else str(nid)
                out[key] = max(out.get(key, 0.0), conf)
        return out

    def _title_html(self) -> str:
        g = self.graph
        if g is None:
            return "No topology in this store."
        inferred = bool(g.graph.get("inferred"))
        culprits = [k for k in self.severity if isinstance(k, str)]
        msg = "<b>Hardware topology</b>"
        msg += (
            " — <span style='color:#B26A00'>inferred topology (no topology file; typical layout assumed)</span>"
            if inferred
            else f" — from {esc(str(g.graph.get('source', '')))}"
        )
        if culprits:
            msg += f"<br><span style='color:#D62728'>implicated: {esc(', '.join(sorted(culprits)))}</span>"
        return msg + "<br><span style='color:#777'>click a GPU or component to show only its ranks</span>"

    def _build(self) -> None:
        self._later = False
        g = self.graph
        if g is None:
            return
        from kat_gui.topology import layout

        self.compact = len([n for n, d in g.nodes(data=True) if d.get("kind") == "host"]) > COMPACT_HOSTS
        if self.compact:
            self._steps = self._build_compact(g)
            self._step()
            return
        pos = {n: (x * SCALE, y * SCALE) for n, (x, y) in layout(g).items()}
        for u, v, d in g.edges(data=True):
            if u not in pos or v not in pos or u == v:
                continue
            key = tuple(sorted((u, v)))
            item = _EdgeItem(u, v, QtCore.QLineF(*pos[u], *pos[v]))
            sev = self.severity.get(key)
            color = (
                severity_color(sev)
                if sev is not None
                else QtGui.QColor(EDGE_COLOR.get(d.get("kind"), "#AAAAAA"))
            )
            width = 5 if sev is not None else (2.5 if d.get("kind") in ("nvlink", "nvswitch") else 1.5)
            item.setPen(QtGui.QPen(color, width))
            item.setZValue(0)
            item.setToolTip(f"{u} — {v}: {d.get('kind', '')}" + (f" ×{d['count']}" if d.get("count") else ""))
            self.scene.addItem(item)
            self.edge_items[key] = item
        font = QtGui.QFont()
        font.setPointSizeF(8)
        for n, d in g.nodes(data=True):
            if n not in pos:
                continue
            kind = d.get("kind", "")
            w = NODE_W.get(kind, 84)
            x, y = pos[n]
            item = _NodeItem(n, QtCore.QRectF(x - w / 2, y - NODE_H / 2, w, NODE_H))
            sev = self.severity.get(n)
            fill = severity_color(sev) if sev is not None else QtGui.QColor(KIND_FILL.get(kind, "#EEEEEE"))
            if sev is not None:
                fill.setAlpha(230)
            item.setBrush(fill)
            item.setPen(QtGui.QPen(QtGui.QColor("#555555"), 1))
            item.setZValue(1)
            label = str(d.get("label") or n)
            if kind == "gpu":
                label = f"{n}\nrank {d.get('rank')}"
            text = QtWidgets.QGraphicsSimpleTextItem(label, item)
            text.setFont(font)
            if sev is not None and sev >= 0.4:
                text.setBrush(QtGui.QColor("white"))
            br = text.boundingRect()
            text.setPos(x - br.width() / 2, y - br.height() / 2)
            tip = f"{n} ({kind})"
            if sev is not None:
                tip += f" — implicated, confidence {sev:.2f}"
            item.setToolTip(tip)
            self.scene.addItem(item)
            self.node_items[n] = item
        self.scene.setSceneRect(self.scene.itemsBoundingRect().adjusted(-20, -20, 20, 20))

    def _build_compact(self, g: nx.Graph) -> Iterator[None]:
        """Many hosts: each host a box with its GPUs collapsed into a strip of cells (in a grid, read at a fixed
        scale and scrolled), the implicated hosts drawn again, expanded, on top with their GPUs named. Yields
        after every HOSTS_PER_TURN hosts (1,024 GPU cells take ~20 ms: each turn of the GUI thread stays short)."""
        hosts = list(g.graph.get("hosts") or [])
        hosts += sorted(
            (n for n, d in g.nodes(data=True) if d.get("kind") == "host" and n not in hosts),
            key=lambda h: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", h)],
        )
        gpus: dict[str, list[str]] = {h: [] for h in hosts}
        for n, d in g.nodes(data=True):
            if d.get("kind") == "gpu" and d.get("host") in gpus:
                gpus[d["host"]].append(n)
        for h in gpus:
            gpus[h].sort(key=lambda n: (g.nodes[n].get("device", 0), g.nodes[n].get("rank", 0)))
        sev_of = {n: v for n, v in self.severity.items() if isinstance(n, str)}
        # a host is implicated when a finding names it or anything on it
        host_sev: dict[str, float] = {}
        for n, v in sev_of.items():
            if n in g:
                h = g.nodes[n].get("host") or (n if g.nodes[n].get("kind") == "host" else None)
                if h is not None:
                    host_sev[h] = max(host_sev.get(h, 0.0), v)
        self.implicated_hosts = [h for h in hosts if h in host_sev]
        font = QtGui.QFont()
        font.setPointSizeF(8)
        bold = QtGui.QFont(font)
        bold.setBold(True)
        cols = COMPACT_COLS
        cell_w, box_w, box_h, gap = 11.0, 100.0, 36.0, 8.0
        width = cols * (box_w + gap) - gap
        shown = self.implicated_hosts[:3]  # expanded, each ``expanded_h`` tall and ``2 gap`` apart
        expanded_h = 74.0
        # The whole grid's extent first: the scene does not grow as the hosts come in turn by turn (each
        # growth changed the view's scroll bars, which re-laid out and repainted the whole tab)
        top = len(shown) * (expanded_h + 2 * gap)
        height = top + -(-len(hosts) // cols) * (box_h + gap) - gap
        self.scene.setSceneRect(QtCore.QRectF(0, 0, width, height).adjusted(-6, -6, 6, 6))
        y = 0.0
        # expanded implicated hosts (up to 3): GPU boxes with names and ranks
        for h in shown:
            members = gpus.get(h, [])
            box = _NodeItem(h, QtCore.QRectF(0, y, width, expanded_h))
            box.setBrush(QtGui.QColor("#FFF4F2"))
            box.setPen(QtGui.QPen(severity_color(host_sev[h]), 2))
            box.setToolTip(f"{h} — implicated (confidence {host_sev[h]:.2f}); click: its ranks")
            self.scene.addItem(box)
            self.node_items[h] = box
            t = QtWidgets.QGraphicsSimpleTextItem(f"⚠ {h} · {len(members)} GPUs", box)
            t.setFont(bold)
            t.setBrush(severity_color(host_sev[h]))
            t.setPos(6, y + 4)
            gw = (width - 12) / max(len(members), 1)
            for i, n in enumerate(members):
                d = g.nodes[n]
                r = QtCore.QRectF(6 + i * gw + 1, y + 24, gw - 2, 44)
                self._gpu_cell(n, r, sev_of.get(n), f"GPU{d.get('device', '')}\nr{d.get('rank')}", font)
            y += expanded_h + 2 * gap
        self._compact_top = y
        for k, h in enumerate(hosts):
            if k and k % HOSTS_PER_TURN == 0:
                yield
            cx, cy = (k % cols) * (box_w + gap), y + (k // cols) * (box_h + gap)
            sev = host_sev.get(h)
            key = h if h not in self.node_items else f"{h}\0compact"
            box = _NodeItem(h, QtCore.QRectF(cx, cy, box_w, box_h))
            box.setBrush(QtGui.QColor("#FFE9E6" if sev is not None else KIND_FILL["host"]))
            box.setPen(
                QtGui.QPen(severity_color(sev), 2)
                if sev is not None
                else QtGui.QPen(QtGui.QColor("#999999"), 1)
            )
            box.setToolTip(f"{h}: {len(gpus.get(h, []))} GPUs — click: show its ranks")
            self.scene.addItem(box)
            self.node_items[key] = box
            t = QtWidgets.QGraphicsSimpleTextItem(h, box)
            t.setFont(bold if sev is not None else font)
            if sev is not None:
                t.setBrush(severity_color(sev))
            t.setPos(cx + 4, cy + 2)
            members = gpus.get(h, [])
            cw = min(cell_w, (box_w - 8) / max(len(members), 1))
            for i, n in enumerate(members):
                r = QtCore.QRectF(cx + 4 + i * cw, cy + box_h - 14, cw - 1.5, 10)
                self._gpu_cell(n, r, sev_of.get(n), None, font, register=n not in self.node_items)

    def _gpu_cell(self, n: str, rect: QtCore.QRectF, sev, label, font, register: bool = True) -> None:
        item = _NodeItem(n, rect)
        item.setBrush(severity_color(sev) if sev is not None else QtGui.QColor(KIND_FILL["gpu"]))
        item.setPen(QtGui.QPen(QtGui.QColor("#555555" if label else "#8A9BB0"), 1 if label else 0.5))
        item.setZValue(2)
        d = self.graph.nodes[n]
        item.setToolTip(
            f"{n} · rank {d.get('rank')} · {d.get('host', '')}"
            + (f" — implicated, confidence {sev:.2f}" if sev is not None else "")
        )
        if label:
            t = QtWidgets.QGraphicsSimpleTextItem(label, item)
            t.setFont(font)
            if sev is not None and sev >= 0.4:
                t.setBrush(QtGui.QColor("white"))
            br = t.boundingRect()
            t.setPos(rect.center().x() - br.width() / 2, rect.center().y() - br.height() / 2)
        self.scene.addItem(item)
        if register:
            self.node_items[n] = item

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        self.fit()

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self.fit()

    def fit(self) -> None:
        if not self.scene.items():
            return
        if getattr(self, "compact", False):
            # fit the width only (text stays readable), scroll down for more hosts
            width = max(self.view.viewport().width() - 4, 50)
            s = width / max(self.scene.sceneRect().width(), 1.0)
            self.view.resetTransform()
            self.view.scale(s, s)
            self.view.ensureVisible(QtCore.QRectF(self.scene.sceneRect().topLeft(), QtCore.QSizeF(1, 1)))
            return
        self.view.fitInView(self.scene.sceneRect(), QtCore.Qt.AspectRatioMode.KeepAspectRatio)

    # ------------------------------------------------------------------ clicks

    def _press(self, ev: QtGui.QMouseEvent) -> None:
        item = self.view.itemAt(ev.position().toPoint())
        while item is not None and not isinstance(item, (_NodeItem, _EdgeItem)):
            item = item.parentItem()
        if item is None:
            return
        if isinstance(item, _NodeItem):
            self.click_node(item.node)
        else:
            self.click_edge(*item.edge)

    def click_node(self, node: str) -> None:
        if self.graph is None or node not in self.graph:
            return
        if self.active == node:
            self.clear()
            return
        ranks = ranks_under(self.graph, node)
        self._activate(node, ranks)

    def click_edge(self, u: str, v: str) -> None:
        key = tuple(sorted((u, v)))
        if self.active == key:
            self.clear()
            return
        ranks = set()
        for n in key:
            if self.graph.nodes[n].get("kind") == "gpu":
                ranks.add(int(self.graph.nodes[n]["rank"]))
        if not ranks:
            for n in key:
                ranks |= ranks_under(self.graph, n)
        self._activate(key, ranks)

    def _activate(self, key, ranks: set[int]) -> None:
        self._outline(self.active, False)
        self.active = key
        self._outline(key, True)
        self.clear_btn.setEnabled(True)
        self.ranksSelected.emit(sorted(ranks))

    def _outline(self, key, on: bool) -> None:
        if key is None:
            return
        if isinstance(key, str) and key in self.node_items:
            self.node_items[key].setPen(
                QtGui.QPen(QtGui.QColor("#111111" if on else "#555555"), 3 if on else 1)
            )
        elif isinstance(key, tuple) and key in self.edge_items:
            it = self.edge_items[key]
            pen = it.pen()
            pen.setStyle(QtCore.Qt.PenStyle.DashLine if on else QtCore.Qt.PenStyle.SolidLine)
            it.setPen(pen)

    def clear(self) -> None:
        self._outline(self.active, False)
        self.active = None
        self.clear_btn.setEnabled(False)
        self.ranksSelected.emit([])
