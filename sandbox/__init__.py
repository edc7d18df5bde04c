"""interp-agent: sandbox."""
