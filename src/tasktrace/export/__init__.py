"""The export layer: configuration, the OTLP exporters, pipelines, the tracer provider.

Imports :mod:`tasktrace.core` and :mod:`tasktrace.tree` only (the provider adds the tree
processor). Nothing is imported here, so that :mod:`tasktrace.export.environment` can be
imported first (see :mod:`tasktrace`).
"""
