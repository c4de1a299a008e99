"""The web console (dd_ctl web): the pump's configurations, their history, where each file went.

It reads what dd writes (instance state and metrics files, the provenance store, its own
history) and asks the broker (queue depths, its management API); it never calls into a
running flow.  ``app`` makes the Flask application and serves it, ``auth`` signs users in
against the broker, ``pages`` renders the pages, ``overview`` judges each configuration's
state, ``plot`` draws the SVG plots, ``sampler`` keeps the history, ``exporter`` is
/metrics for Prometheus, and ``service`` runs it all as the configuration web/NAME.
"""
