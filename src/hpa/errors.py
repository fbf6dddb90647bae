"""The one exception type the CLIs turn into a one-line error and a non-zero exit."""


class HPAError(Exception):
    """Bad input or an impossible request. The message names the file, row or key at fault.

    Command-line entry points print ``error: <message>`` on one line and exit with status 2.
    """
