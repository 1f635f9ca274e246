"""The command lines, each a thin ``main(argv) -> int`` on :mod:`mygpt.cli` over the library modules.

Installed as console scripts (``mygpt-generate``, ``mygpt-evaluate``, ``mygpt-analyze``, ``mygpt-push``,
``mygpt-sampler-report``, ...); the root scripts (``generate.py``, ...) run the same ``main`` from a checkout.
The library never imports this package.
"""
