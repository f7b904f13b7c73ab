"""``python -m sevensense.cli``, as the tests and scripts run it."""

from sevensense.cli import main

main()
