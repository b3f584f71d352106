"""A splice plugin with a misspelled hook implementation."""
