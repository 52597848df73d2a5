#!/usr/bin/env python
"""Django's command-line utility for Cortex Core."""

import gc
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    finally:
        # The command is over: everything left lives until the process ends. Frozen, the interpreter's
        # collections at exit skip it (a long-running worker's heap took seconds of CPU to walk there,
        # which a supervisor stopping its children, and a loaded CI machine, waited for). atexit handlers
        # (flushing spans and logs) still run first, and objects freed by reference count are finalized.
        gc.freeze()


if __name__ == "__main__":
    main()
