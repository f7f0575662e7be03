"""The error every config check raises (rlx.config re-exports it)."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""
