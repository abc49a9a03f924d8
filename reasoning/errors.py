"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""


class SpecstepError(Exception):
    """Base class for every error caused by user input (bad spec, bad file, bad threshold...)."""


class ModelSpecError(SpecstepError):
    """A model spec that cannot be parsed or resolved to weights."""


class BackendUnavailableError(SpecstepError):
    """A backend cannot run: its optional engine is not installed, or its server cannot be reached."""


class ConfigError(SpecstepError):
    """A bad option value: threshold out of range, empty question, unknown router..."""
