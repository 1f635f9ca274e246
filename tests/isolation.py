"""Run code as a user who has only the Hub's files: the project's own modules cannot be imported.

CI installs the project in editable mode, so ``import modeling_mygpt`` works in any interpreter on the machine.
A test that loads the model with ``trust_remote_code=True`` in such an interpreter could pass only because the
project is installed (a stray absolute import in the remote code would find the checkout). The prelude below
puts an import hook first on ``sys.meta_path`` that refuses every top-level module the project ships, so only
the copies transformers makes under ``transformers_modules.*`` can be used.
"""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def project_modules() -> tuple[str, ...]:
    """The top-level names the project installs: setup.cfg's ``py_modules`` and its packages' roots."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    modules = setup["options"]["py_modules"].split()
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in {"tests"})
    return tuple(modules + packages)


def block_project_prelude() -> str:
    """Python source to put first in a ``python -c`` script: after it, the project's modules raise ImportError."""
    names = project_modules()
    return (
        "import sys\n"
        "class _NoProject:\n"
        f"    names = {set(names)!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ModuleNotFoundError(f'{name} belongs to the project, which this interpreter must not see')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoProject())\n"
        f"for _name in {names!r}:\n"
        "    try:\n"
        "        __import__(_name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'the project module {_name} is importable here: the test would prove nothing')\n"
    )
