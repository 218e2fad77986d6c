"""The ``onestack`` command."""
