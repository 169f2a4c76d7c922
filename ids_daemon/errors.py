"""Errors the daemon reports to a user as one line (no traceback)."""


class IdsError(Exception):
    """Base class: an error whose message is complete and meant for the user."""

    exit_code = 1  # the process's exit status when this ends a command


class CaptureError(IdsError):
    """A packet source cannot be read (bad file, unknown link type, socket failure)."""


class ConfigError(IdsError):
    """A configuration value is missing or invalid."""

    exit_code = 2  # like a usage error: the command was given something it cannot run with
