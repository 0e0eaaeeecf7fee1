"""Why a sweep cannot start; the CLI prints the message as one line, exit code 2."""


class SweepSetupError(ValueError):
    """The sweep cannot start (output directory, data, weights, objective, resources)."""
