"""One temporary folder per run of the suite, for the test process and every command it starts.

Imported first thing by ``conftest.py``: it sets ``TMPDIR`` (inherited by every command the
tests start) and :data:`tempfile.tempdir` (this process: pytest's ``tmp_path`` folders, the
spool folders of in-process tasks) to a new folder, which ``conftest.py`` removes when pytest
ends. A ``tasktrace run`` removes what killed runs of this user left in the temporary folder and
says so on stderr; in the machine's own temporary folder, another program's killed run (a second
test run, a user's script) would show up in the tests that compare stderr line by line.
"""

from __future__ import annotations

import multiprocessing.util
import os
import tempfile
from typing import Final

__all__ = ["SUITE_TMP", "SYSTEM_TMP"]

# multiprocessing's own folder (forkserver's socket, pool files) is made now, in the machine's
# folder, as it would be: multiprocessing removes it at exit, after conftest.py removed the
# suite's folder (a FileNotFoundError traceback after pytest's summary otherwise).
multiprocessing.util.get_temp_dir()
SYSTEM_TMP: Final = tempfile.gettempdir()
"""The temporary folder the suite was started with (``/tmp`` unless ``TMPDIR`` said otherwise)."""
SUITE_TMP: Final = tempfile.mkdtemp(prefix="tasktrace-tests-")
"""The suite's own temporary folder, inside :data:`SYSTEM_TMP`."""

os.environ["TMPDIR"] = SUITE_TMP
tempfile.tempdir = SUITE_TMP
