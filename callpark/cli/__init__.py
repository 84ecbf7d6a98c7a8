"""The ``callpark`` command line."""
