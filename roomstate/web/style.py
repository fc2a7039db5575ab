"""The web view's only stylesheet, served by the plugin itself (the Content-Security-Policy
allows nothing else). Plain CSS: readable on a phone, contrast at least 4.5:1, no web fonts."""

CSS = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #4a5562; --line: #c9d1da; --accent: #0b5cad;
  --joins: #1a7f37; --leaves: #b42318; --paper: #ffffff; --shade: #f3f5f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--paper); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center;
  padding: .75rem 1rem; background: var(--shade); border-bottom: 1px solid var(--line); }
header .who { margin-left: auto; color: var(--muted); }
header form { display: inline; }
main { padding: 1rem; max-width: 80rem; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f0b400; outline-offset: 2px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--shade); white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: .5rem 0; }
label { display: flex; flex-direction: column; font-size: .9rem; color: var(--muted); }
input, select, button { font: inherit; padding: .35rem .5rem; border: 1px solid var(--muted); border-radius: 4px; }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
nav.pages { display: flex; gap: 1rem; margin: .5rem 0 1.5rem; }
nav.periods a[aria-current="page"] { font-weight: 700; text-decoration: none; color: var(--ink); }
dl.info { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.info dt { color: var(--muted); }
dl.info dd { margin: 0; overflow-wrap: anywhere; }
.note { color: var(--muted); }
svg { max-width: 100%; height: auto; display: block; }
svg .axis, svg .grid { stroke: var(--line); }
svg text { fill: var(--muted); font-size: 12px; }
svg .line { stroke: var(--accent); fill: none; stroke-width: 2; }
svg .area { fill: var(--accent); opacity: .12; }
svg .joins { fill: var(--joins); }
svg .leaves { fill: var(--leaves); }
details { margin: .25rem 0 1rem; }
@media (max-width: 40rem) { main { padding: .75rem; } th, td { padding: .35rem .4rem; } }
"""
