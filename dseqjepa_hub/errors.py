"""The package's one error base class, and the errors the core raises.

Library code raises a subclass of `DSeqJEPAError` for anything a user can fix (a bad file, a
bad setting, an unreachable Hub), with a message that names the file or field and what was
expected; the `dseqjepa` command turns any of them into one line on stderr and exit code 1.
Programming errors stay ordinary Python exceptions with their tracebacks.
"""

from contextlib import contextmanager


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a multi-line message would break the CLI's one-line errors)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


class DSeqJEPAError(Exception):
    """A problem with the user's input or environment, explained in words."""


class NonFiniteOutputError(DSeqJEPAError):
    """A model produced NaN or infinite outputs (damaged weights or settings): never written as a result."""


class ModelLoadError(DSeqJEPAError):
    """A model folder, run or repo id that does not load as a DSeq-JEPA model, or an absent device: the one
    error of every door that loads one (`from_pretrained` of every class, the pipelines, the loader). Not a
    ValueError: transformers' pipeline factory would catch it and try another class, losing the reason."""


class ModelFileError(ModelLoadError, OSError):
    """A `ModelLoadError` for a file that is missing or unreadable: an OSError too, as transformers' contract
    for `from_pretrained` of a path that is not there says."""


class WeightsMismatchError(ModelLoadError, RuntimeError):
    """A `ModelLoadError` for weights whose shapes do not fit the model (and `ignore_mismatched_sizes`
    not set): a RuntimeError too, as transformers' contract for that case says."""


@contextmanager
def load_errors_as(what: str):
    """Inside, any exception but the package's own becomes `ModelLoadError("WHAT: reason")` (`ModelFileError`
    for an OSError), the original chained: the loading doors of the core (`from_pretrained`, `from_dict`)
    raise one class."""
    try:
        yield
    except DSeqJEPAError:
        raise
    except Exception as error:  # noqa: BLE001 -- transformers', safetensors', json's and the strict config's errors
        kind = (ModelFileError if isinstance(error, OSError)
                else WeightsMismatchError if isinstance(error, RuntimeError) and "ignore_mismatched_sizes" in str(error)
                else ModelLoadError)
        raise kind(f"{what}: {one_line(error)}") from error
