"""The projections a request may ask for and their defaults, importable without numpy
(the command line shows them in ``--help``)."""

PROJECTIONS = ("poincare",)
DEFAULT_MAX_NORM = 0.999
