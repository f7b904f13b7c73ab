"""Whose index entries are when nobody says: a name importable without the index stack."""

OPERATOR_TENANT = "local"  # entries added from the command line without --tenant
