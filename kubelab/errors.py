"""The one error kubelab's steps raise: its message names the problem and the fix,
so the command line prints it instead of a traceback."""


class LabError(Exception):
    pass
