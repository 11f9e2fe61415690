"""The replay report (DESIGN §10): what a trader judges a strategy by.

- `account`: the account over a replay, equity marked to market at every bar's close;
- `stats`: the figures of stats.json, each defined as backtesting.py 0.6.6 defines it;
- `build`: builds the whole report from a replay's output (stats, breakdowns, open
  positions, cooldown counts) and writes stats.json and equity.csv;
- `terminal`: the compact stats table the CLI ends with;
- `html`: report.html (Lightweight Charts; an adapter: imported only when a report is rendered).

Everything but `html` is pure numpy over the replay's output: no logging, no environment.
"""
