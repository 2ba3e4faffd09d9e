"""The opportunities page: the alerts in Elasticsearch for the sellers who act on them (issue 15).

``arbitrage.web.app.create_app`` builds the Starlette app; ``arbitrage web`` serves it, and ``make
demo`` runs it beside Dagster. Queries in arbitrage/web/queries.py, the chart in
arbitrage/web/chart.py.
"""
