"""The lowest layer: what every other layer shares, with no life cycle of its own.

The task record and its statuses, the one task ⇄ span mapping, span attribute keys, ids,
settings, context helpers, units, warn-once. Imports nothing of tasktrace's other layers.
"""
