from kat_gui.cli import main

raise SystemExit(main())
