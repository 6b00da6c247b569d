"""What the tests that start a run in a child process and interrupt it share."""

import signal


def default_sigint():
    """A child's `preexec_fn` for a child that must see Ctrl-C: a test suite started as a
    background job of a non-interactive shell has SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
