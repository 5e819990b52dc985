"""Errors that mean "the user's input is wrong": the CLI prints them as one line, without a traceback."""


class GS3Error(ValueError):
    """A user-facing error; the message names the file or setting and what is wrong."""


class DataError(GS3Error):
    """A scene, frame or file cannot be read or fails validation."""


class ConfigError(GS3Error):
    """A config file or override is invalid."""
