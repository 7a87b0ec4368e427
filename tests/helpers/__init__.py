"""Helpers shared by several test modules, one module per topic (``helpers.daemon_kit``,
``helpers.http``, ...), so that no test module imports another. Shared pytest fixtures live in
``helpers.fixtures``, registered as a plugin in ``tests/conftest.py``; what is useful beyond this
suite (the stand-in, the broker, the fake file-writer) ships in ``scicat_ingestor.testing``."""
