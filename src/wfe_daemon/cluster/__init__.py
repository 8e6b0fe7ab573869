"""The Dask executor, both ends: the client in the daemon that sends node attempts of the
``remote_types`` to a Dask cluster, and the module every ``dask worker`` preloads to run
them. Only JSON crosses the wire (:mod:`wfe_daemon.cluster.wire`).

Nothing here is imported unless ``executor = "dask"``: ``distributed`` costs about half a
second and 23 MB to import.
"""
