"""The verifier a request gets when it names none, importable without the verification
stack (the command line shows it in ``--help``)."""

DEFAULT_VERIFIER = "birdnet-v2.4"
