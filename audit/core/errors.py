"""The one exception type that reaches the user as a one-line message and exit status 2."""


class AuditError(Exception):
    """Bad input or a failed run the user can act on (unknown dataset, corrupt file, NaN...).

    The CLI prints ``error: <message>`` on one line and exits with status 2, so the message
    must name the problem and, where there is one, the offending file or flag.
    """
