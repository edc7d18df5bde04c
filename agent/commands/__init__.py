"""CLI command modules; each exposes ``register(app)`` (called by :mod:`agent.cli`). What they print with
(the global flags, consoles, JSON output, one-line errors) is :mod:`agent.commands.output`."""
