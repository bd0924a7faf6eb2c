"""Proof across instances: several servers behind a load balancer, crashes, restarts, outages.

A harness, not part of the library. ``python -m cluster`` (``make
cluster-demo``) starts three uvicorn instances of
``examples/08_cluster_server.py`` on loopback ports behind nginx in round-robin
mode, all on one shared store (PostgreSQL, then Redis), and drives them with the
official SDK client while it kills, restarts and cuts things:

- :mod:`cluster.procs` — child processes on fixed ports (start, signal, restart)
- :mod:`cluster.nginx` — find or install nginx, its config, its access log
- :mod:`cluster.relay` — the cuttable TCP relay between the instances and the store
- :mod:`cluster.stores` — the run's namespace in PostgreSQL or Redis
- :mod:`cluster.harness` — :class:`~cluster.harness.Cluster`, all of the above
- :mod:`cluster.client` — SDK client sessions that record what they saw
- :mod:`cluster.scenarios` — what is done and counted
- :mod:`cluster.report` — the summary and docs/reliability.md

``tests/e2e/test_cluster.py`` runs the scenarios in a shortened form in CI.
"""
