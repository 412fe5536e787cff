"""What every ingest module produces: one :class:`~kat_gui.events.RankTrace` per rank (usually one per file).

A reader module (``kineto.py``, ``nsys.py``, ``functrace.py``) exposes:

- ``FORMAT``: a short name (``"kineto"``, ``"nsys"``, ``"functrace-csv"``...);
- ``sniff(path, head: bytes) -> bool``: True when the content (the first 64 KiB, already gunzipped when the file
  is gzip) looks like this format; the extension is only a hint;
- ``read(path, options: IngestOptions, progress: Progress | None) -> RankTrace``.

A reader whose files may hold several ranks (a function trace with a rank column, a Chrome trace with one
process per rank, an Nsight report of a whole node) also exposes:

- ``read_many(path, options, progress) -> Iterable[RankTrace]``: one trace per rank the file holds (a list or
  an iterator; the registry stores each as it comes and prefers ``read_many`` over ``read``). A trace's
  ``rank`` comes from the content, or is None for the registry to resolve (``--rank``, the file name);
- optionally ``survey(path, options) -> FileSurvey``: what a file holds before it is read (its host name and
  its ranks' processes), cheap. The registry surveys such files when several of them (one per node) must share
  one run-wide rank space, and hands each file its :class:`NodePlacement` in ``options.node``.

Readers raise :class:`kat_gui.errors.KatInputError` for any bad input, never a bare exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kat_gui.events import RankTrace, TrackInfo  # noqa: F401  (the reader output type, re-exported for readers)
from kat_gui.progress import Progress  # noqa: F401  (re-exported for readers)


@dataclass(frozen=True)
class RankMapEntry:
    """One ``--rank-map`` entry: the process ``pid`` is rank ``rank``; ``where`` (a host name, a file name or a
    file stem) says which capture the pid belongs to when several captures are read, None = any."""

    pid: int
    rank: int
    where: str | None = None


@dataclass(frozen=True)
class NodePlacement:
    """Where one capture of a whole node (several ranks in one file) sits in a run of several nodes.

    ``index``: the node's position (0-based); ``label``: a label unique in the run (the host name when the
    captures' host names are distinct, else ``node<index>``); ``host``: the host name the capture gives, or
    None; ``rank_base``: the global rank of the node's first rank; ``order_from``: how nodes were ordered
    (``"host name"``, ``"file order"``, ``"single capture"``); ``nodes``: how many nodes the run has.
    """

    index: int
    label: str
    host: str | None
    rank_base: int
    order_from: str
    nodes: int = 1


@dataclass
class FileSurvey:
    """What a multi-rank file holds, read before the file itself (``survey``): the host it was captured on
    (None when it does not say) and one entry per rank-owning process, in local rank order
    (``{"pid": int, "devices": [int], "name": str}``)."""

    host: str | None
    processes: list[dict] = field(default_factory=list)


@dataclass
class IngestOptions:
    keep_cpu_ops: bool = False  # keep cpu_op events (skipped by default)
    keep_python: bool = False  # keep python_function events (skipped by default)
    rank: int | None = None  # force the rank of a single file (overrides file content and name)
    # ``--rank-map``: process -> rank, overriding the order a multi-rank capture gives (placement.parse_rank_map)
    rank_map: tuple[RankMapEntry, ...] = ()
    # ``--ranks-per-node``: global rank = node index x this + local rank, for captures of whole nodes
    ranks_per_node: int | None = None
    # set by the registry, per file: where a capture of a whole node sits in the run (None: a file on its own)
    node: NodePlacement | None = None
    # Chrome traces: where ranks come from (``pid``, ``tid``, ``process``, ``thread``, each optionally
    # ``:REGEX``; kat_gui.ingest.chrome.RankFrom); None = one process per rank
    rank_from: str | None = None
