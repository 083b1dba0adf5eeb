"""The tree layer: the task-tree processor, task files written from the tree, the spool.

Imports :mod:`tasktrace.core` only. See :mod:`tasktrace.tree.processor`.
"""
