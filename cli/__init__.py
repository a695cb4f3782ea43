"""The ``memory-service`` command line, above both the core and the HTTP layer.

``main`` builds one subcommand per module listed in ``main.SUBCOMMANDS``; each
such module defines ``NAME``, ``HELP``, ``configure(parser)`` and
``run(args, settings) -> int``. Adding a subcommand is adding a module and
one line to that list.
"""
