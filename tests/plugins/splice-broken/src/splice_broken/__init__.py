"""A splice plugin that fails on import, to test that the others still load."""
