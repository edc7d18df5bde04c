"""interp-agent: tools."""
