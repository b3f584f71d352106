"""A splice plugin whose tag clashes with another distribution's."""
