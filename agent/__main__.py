"""``python -m agent`` is the ``interp-agent`` command."""

from agent.cli import main

main()
