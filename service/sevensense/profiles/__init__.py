"""The named settings profiles: a TOML file each, in this package.

The names live here, apart from :mod:`sevensense.settings`, so that ``sevensense --help``
lists them without loading pydantic.
"""

PROFILE_NAMES = ("default", "field", "edge", "server", "cloud")
