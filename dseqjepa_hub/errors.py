"""The package's one error base class.

Library code raises a subclass of `DSeqJEPAError` for anything a user can fix (a bad file, a
bad setting, an unreachable Hub), with a message that names the file or field and what was
expected; the `dseqjepa` command turns any of them into one line on stderr and exit code 1.
Programming errors stay ordinary Python exceptions with their tracebacks.
"""


class DSeqJEPAError(Exception):
    """A problem with the user's input or environment, explained in words."""


class NonFiniteOutputError(DSeqJEPAError):
    """A model produced NaN or infinite outputs (damaged weights or settings): never written as a result."""
