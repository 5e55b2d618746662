"""`python -m synthcheck.cli`: the `synthcheck` command."""

from . import main

main()
