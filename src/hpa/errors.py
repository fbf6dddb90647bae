"""The one exception type the CLIs turn into a one-line error and a non-zero exit."""
import errno


class HPAError(Exception):
    """Bad input or an impossible request. The message names the file, row or key at fault.

    Command-line entry points print ``error: <message>`` on one line and exit with status 2.
    """


#: errno values of a write that failed because the disk is full (or a file-size limit was hit)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: errno values that blame the place a file is (full, read-only, forbidden, failing disk), never the
#: code: ``hpa.cli`` prints these as one line; any other OSError (FileNotFoundError...) may be a bug
#: and keeps its traceback
ENVIRONMENT_ERRNOS = FULL_ERRNOS + (errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)
