"""interp-agent: evals."""
