"""The exceptions nbmlops raises.

Every message says what happened, shows the offending value and says what to do::

    NbmlopsError
    ├── UsageError ............ a bad option or argument given to a magic, the CLI or the API
    ├── CaptureError .......... preprocessing code that cannot be captured by source
    ├── ArtifactError ......... an artifact that cannot be built or read
    │   ├── ArtifactModifiedError   a file differs from manifest.json, the manifest from the
    │   │                          registry's digest, or a file name leads outside the folder
    │   └── ParityError            the packaged artifact does not reproduce the notebook
    ├── RegistryError ......... the MLflow registry refused or lacks something
    │   └── ModelNotFoundError     no registered model or version answers an address
    ├── ValidationError ....... request records that do not match the schema (HTTP 422)
    ├── ServingError .......... a prediction server that cannot start, answer or stop
    ├── BatchError ............ a batch input that cannot be read or scored (exit 1)
    ├── LogError .............. a prediction log that cannot be opened, read or written
    ├── StreamError ........... a stream's broker that cannot be reached or refuses a command
    └── NotebookError ......... a notebook nbmlops runs (the demo) that fails in a cell
"""

from __future__ import annotations


class NbmlopsError(Exception):
    """Root of every error nbmlops raises on purpose."""


class UsageError(NbmlopsError):
    """An option or argument is wrong; the message names it."""


class CaptureError(NbmlopsError):
    """A preprocessing function needs something that cannot be captured as source.

    ``problems`` lists one line per offending name.
    """

    def __init__(self, function: str, problems: list[str]) -> None:
        self.function = function
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"cannot capture preprocessing function '{function}' by source; nothing was "
            f"registered:\n{lines}"
        )


class ArtifactError(NbmlopsError):
    """An artifact cannot be built, read or verified."""


class ArtifactModifiedError(ArtifactError):
    """A file of an artifact differs from what its manifest recorded, the manifest differs from
    the one registered, or a file name leads outside the artifact folder; ``file`` names it."""

    def __init__(self, path: str, file: str, reason: str) -> None:
        self.path = path
        self.file = file
        super().__init__(
            f"artifact at {path} was modified after packaging: {file} {reason}. "
            "Refusing to load it; package the model again or restore the original file."
        )


class ParityError(ArtifactError):
    """The artifact, loaded in a fresh process, does not predict what the notebook predicted."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        self.details = list(details or [])
        extra = "".join(f"\n  - {d}" for d in self.details)
        super().__init__(message + extra)


class RegistryError(NbmlopsError):
    """The MLflow registry refused an operation or lacks what was asked for."""


class ModelNotFoundError(RegistryError):
    """No registered model or version answers the given address."""


class ValidationError(NbmlopsError):
    """Records that do not match the model's schema; ``problems`` names each one."""

    def __init__(self, problems: list) -> None:
        self.problems = list(problems)
        shown = "; ".join(
            (f"record {p.record}" if p.record is not None else "request")
            + (f", field '{p.field}'" if p.field else "")
            + f": {p.message}"
            for p in self.problems[:5]
        )
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{len(self.problems)} invalid input(s): {shown}{more}")


class ServingError(NbmlopsError):
    """A prediction server could not start, answer or stop."""


class BatchError(NbmlopsError):
    """A batch input that cannot be read or scored: a missing file, column or format."""


class LogError(NbmlopsError):
    """The prediction log (``NBMLOPS_LOG_URI``) cannot be opened, migrated, read or written."""


class StreamError(NbmlopsError):
    """A stream's broker cannot be reached, or refuses what a consumer asks of it."""


class NotebookError(NbmlopsError):
    """A notebook run by nbmlops failed in a cell; ``output`` is the executed notebook."""

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, output: str):
        self.notebook, self.cell, self.ename, self.evalue = notebook, cell, ename, evalue
        self.output = output
        super().__init__(
            f"{notebook} failed in cell {cell}: {ename}: {evalue}; the executed notebook, with "
            f"the error and the cells before it, is {output}"
        )
