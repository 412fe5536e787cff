"""Entry script of the frozen app: one program, two names (``kat`` and ``kat-gui``) sharing one folder."""

import os
import sys

from kat_gui.cli import gui_main, main

if __name__ == "__main__":
    if os.path.basename(sys.argv[0]).startswith("kat-gui"):
        raise SystemExit(gui_main())
    raise SystemExit(main())
