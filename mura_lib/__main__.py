"""`python -m mura_lib ...` runs the command line (see :mod:`mura_lib.cli`)."""

from mura_lib.cli import main

raise SystemExit(main())
