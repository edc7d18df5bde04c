"""CLI command modules; each exposes ``register(app)``. Listed in ``agent.cli.COMMAND_MODULES``."""
