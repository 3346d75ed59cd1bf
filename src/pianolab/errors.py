"""User-facing errors: one line that names the file and the problem."""


class PianolabError(Exception):
    """An error caused by bad input or configuration; the CLI prints it as one line."""


def fail(path, problem: str) -> PianolabError:
    """Build a PianolabError of the form '<path>: <problem>'."""
    return PianolabError(f"{path}: {problem}")
