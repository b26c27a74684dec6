#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentwatch_site.settings")
    from django.core.management import execute_from_command_line

    if not any(arg.startswith("--settings") for arg in sys.argv[1:]):
        from agentwatch_site.env import settings_or_exit

        settings_or_exit("manage.py")  # other settings modules: Django reads them (and reports) itself

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
