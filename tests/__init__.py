"""The test suite (a package so helpers like ``tests.fake_anthropic`` import by name)."""
