"""python -m bench: the whole suite (see bench/README.md)."""

from .runner import main

raise SystemExit(main())
