"""The command lines: each module has a thin ``main(argv=None) -> int`` installed as a ``mygpt-*`` console script.

The work happens in the library modules below them; nothing in the library imports a command.
"""
