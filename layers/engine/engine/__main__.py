"""`python -m engine`: see engine.entrypoints.cli.main.

Started as a Lambda function is (template.yaml, engine.entrypoints.coldstart): pydantic's
plugin scan off (the engine uses none; it reads every installed package's entry points), and
the cyclic collector paused while the imports make their long-lived objects (modules,
classes, pydantic's schemas), which it would walk again and again and free nothing. Together
3 % of the instructions of a replay of 200,000 bars with nothing to trade.
"""

import gc
import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
gc.disable()

from engine.entrypoints.cli.main import main  # noqa: E402  (after the pause)

gc.freeze()
gc.enable()

raise SystemExit(main())
