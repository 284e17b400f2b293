"""``python -m recast.cli``: the same as the ``recast`` command."""

from recast.cli import main

main()
