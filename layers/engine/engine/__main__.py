"""`python -m engine`: see engine.entrypoints.cli.main."""

from engine.entrypoints.cli.main import main

raise SystemExit(main())
