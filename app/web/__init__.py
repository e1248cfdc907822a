"""The dashboard: server-rendered page shells (Jinja2) whose JavaScript reads and drives the JSON API.

Nothing here touches the database: every number on a page comes from `/v1` over HTTP, in the
browser. Static files (the scripts, the stylesheet and the vendored uPlot) are served from
`/static`.
"""
