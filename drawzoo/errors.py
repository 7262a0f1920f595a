"""The errors drawzoo raises: each names what is wrong, and the CLI prints them as one line."""


class DrawzooError(Exception):
    """Base class of every error drawzoo raises on purpose."""


class UnknownModelError(DrawzooError, LookupError):
    """A model name that no installed package registers."""

    def __str__(self):  # LookupError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class ConfigError(DrawzooError, ValueError):
    """A configuration key or value that the model does not accept."""


class InputError(DrawzooError, ValueError):
    """Images of the wrong type, shape or range."""


class CheckpointError(DrawzooError):
    """A checkpoint that cannot be read, or that belongs to another model."""


class PretrainedError(DrawzooError):
    """A pretrained tag that is unknown or of another model, or whose weight file is missing or not
    the manifest's."""


class WriteError(DrawzooError, OSError):
    """A file that could not be written (disk full, no permission...); what was there is intact."""

    def __str__(self):  # OSError would prefix "[Errno N]"
        return str(self.strerror)


class MemoryLimitError(DrawzooError, ValueError):
    """A config or request that needs more memory than the device has (`drawzoo.memory`): refused
    before it is allocated."""


class DataError(DrawzooError, ValueError):
    """A data file that is missing or malformed."""


class RecipeError(DrawzooError, ValueError):
    """A recipe file that is missing, not TOML, or holds a table, key or value drawzoo does not accept."""


class ObjectiveError(DrawzooError, ValueError):
    """A training objective that is unknown, or a Pyro ELBO that cannot train the model."""


class NoLatentSitesError(DrawzooError, ValueError):
    """A model whose guide samples no latent site: it has no KL per step or active units to report."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): a reason to quote."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
