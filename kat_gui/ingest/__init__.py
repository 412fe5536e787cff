"""Trace readers (one module per source format) and the registry that finds, sniffs and reads files."""

from kat_gui.ingest.base import IngestOptions, Progress, RankTrace, TrackInfo
from kat_gui.ingest.registry import (
    READER_MODULES,
    expand_paths,
    plan,
    rank_from_filename,
    read_head,
    read_traces,
    reader_for,
    readers,
    sniff_format,
)

__all__ = [
    "READER_MODULES",
    "IngestOptions",
    "Progress",
    "RankTrace",
    "TrackInfo",
    "expand_paths",
    "plan",
    "rank_from_filename",
    "read_head",
    "read_traces",
    "reader_for",
    "readers",
    "sniff_format",
]
