"""Benchmarks of tasktrace: ``python -m benchmarks`` runs them (see :mod:`benchmarks.__main__`)."""
