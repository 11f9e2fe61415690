"""`python -m engine`: see engine.entrypoints.cli.main.

Started as a Lambda function is (template.yaml, engine.entrypoints.coldstart): pydantic's
plugin scan off (the engine uses none; it reads every installed package's entry points), and
the cyclic collector paused while the imports make their long-lived objects. Together 3 % of
the instructions of a replay of 200,000 bars with nothing to trade.
"""

from engine.entrypoints.coldstart import imports_done

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# after the pause and the setting: these imports are what they are for
from engine.entrypoints.cli.main import main

imports_done()

raise SystemExit(main())
