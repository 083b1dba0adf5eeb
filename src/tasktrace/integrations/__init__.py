"""Engine integrations: work handed to joblib, Ray or Dask joins the submitting task's tree.

Each submodule imports its engine and is therefore importable only where that engine is
installed (extras ``tasktrace[joblib]``, ``tasktrace[ray]``, ``tasktrace[dask]``); ``import
tasktrace`` never imports them. See :doc:`/clusters` for the set-up line of each engine.

- :mod:`tasktrace.integrations.joblib`: a joblib backend (``joblib.parallel_config``).
- :mod:`tasktrace.integrations.ray`: Ray's tracing start-up hook and a collector actor.
- :mod:`tasktrace.integrations.dask`: a client set-up with a worker plugin and an event topic.
"""
