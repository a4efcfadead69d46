"""One exception family for everything a user can get wrong, and its exit codes.

Every error carries a stable machine-readable ``code`` string, a one-line
message that names the file, node or field, and the process exit status the
CLI uses:

* 1 -- the model cannot be mapped as asked (:class:`UnsupportedError`)
* 2 -- bad input: usage, unreadable or malformed model/target/data, a limit hit
* 3 -- internal error (a bug); never raised on purpose for user input
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNMAPPABLE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def clean(text: object, limit: int = 200) -> str:
    """Make untrusted text (a node name, a path) safe for a one-line message.

    Control characters (newlines, terminal escapes) are escaped, invalid
    UTF-8 has already been replaced by the caller's decoding, and very long
    names are shortened so an error stays one readable line.
    """
    s = str(text)
    out = []
    for ch in s:
        if ch.isprintable() and ch not in "\r\n\t\x1b":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    s = "".join(out)
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return s


class AcompileError(Exception):
    """Base of all errors meant for the user. ``str(err)`` is one line."""

    code = "error"
    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.where = where
        self.hint = hint
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{clean(self.where)}: ")
        parts.append(clean(self.message, limit=600))
        if self.hint:
            parts.append(f" ({clean(self.hint, limit=300)})")
        return "".join(parts)

    def to_json(self) -> dict:
        return {"code": self.code, "exit_code": self.exit_code, "message": self.one_line(),
                "where": clean(self.where) if self.where else None}


class UsageError(AcompileError):
    """A command line that does not make sense."""
    code = "usage"


class InvalidModelError(AcompileError):
    """The model file is unreadable, malformed or violates ONNX rules."""
    code = "invalid_model"


class InvalidTargetError(AcompileError):
    """A target file is unreadable or does not follow the schema."""
    code = "invalid_target"


class InvalidDataError(AcompileError):
    """Input, calibration, program or device data that cannot be used."""
    code = "invalid_data"


class NonFiniteCalibration(InvalidDataError):
    """The calibration data drive an analog layer's inputs to NaN or infinity (nothing finite to set its
    range from): ``reached`` says which layer, and to what."""

    def __init__(self, message: str, *, reached: str, **kwargs):
        super().__init__(message, **kwargs)
        self.reached = reached


class LimitError(AcompileError):
    """Work refused up front because it would exceed a configured limit."""
    code = "limit_exceeded"


class UnsupportedError(AcompileError):
    """The model is valid but cannot be mapped as asked (exit code 1)."""
    code = "unsupported"
    exit_code = EXIT_UNMAPPABLE

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 problems: list | None = None):
        self.problems = list(problems or [])
        super().__init__(message, where=where, hint=hint)


def first_line(e: BaseException) -> str:
    """The first line of an exception's text (a library's multi-line message), fit for a one-line error."""
    text = str(e).strip().splitlines()
    return clean(text[0] if text else type(e).__name__, limit=300)
