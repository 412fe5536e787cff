"""Entry script of the frozen app: one program, two names (``kat`` and ``kat-gui``) sharing one folder."""

import multiprocessing
import os
import sys

from kat_gui.cli import gui_main, main

if __name__ == "__main__":
    # A local dask cluster (kat ingest/detect --workers) spawns its workers by running this program again;
    # freeze_support turns such a child into the worker instead of a second kat.
    multiprocessing.freeze_support()
    if os.path.basename(sys.argv[0]).startswith("kat-gui"):
        raise SystemExit(gui_main())
    raise SystemExit(main())
