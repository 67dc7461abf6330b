"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class DsmarError(Exception):
    """Base of every error dsmar raises on purpose; the message says what to do next."""


class InputError(DsmarError, ValueError):
    """Bad input from the user: shapes, values, paths, options."""


class CatalogError(DsmarError):
    """A STAC catalog could not be searched or gave unusable items."""


class WeightsError(DsmarError):
    """Model weights are missing or do not match their recorded checksum."""
