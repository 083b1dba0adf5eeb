"""``python -m tasktrace.cli``: the ``tasktrace`` command."""

import sys

from tasktrace.cli import main

sys.exit(main())
