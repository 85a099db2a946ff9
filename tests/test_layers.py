"""The layers import one way (issue 22 #4): the CLI sits above the library, and no library module imports it.

Checked on the source with ``ast`` (function-level imports included), so an import hidden inside a function
cannot bring the edge back.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "neuralsim" / "cli"


def _library_files() -> list[Path]:
    files = [*(ROOT / "neuralsim").rglob("*.py"), *(ROOT / "envs").rglob("*.py"), *(ROOT / "agents").rglob("*.py")]
    entry_point = ROOT / "neuralsim" / "__main__.py"  # `python -m neuralsim` is the CLI's entry point, above it
    return sorted(f for f in files if CLI not in f.parents and f != entry_point and "__pycache__" not in f.parts)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_no_library_module_imports_the_cli():
    files = _library_files()
    assert len(files) > 20 and ROOT / "neuralsim" / "train.py" in files
    offenders = [f"{f.relative_to(ROOT)}:{line} imports {name}"
                 for f in files for line, name in _imported_modules(ast.parse(f.read_text(), str(f)))
                 if name == "neuralsim.cli" or name.startswith("neuralsim.cli.")]
    assert not offenders, "\n".join(offenders)


def test_every_subcommand_has_its_module_with_add_arguments_and_run():
    import importlib

    from neuralsim.cli import COMMANDS

    for name, (module, _, _) in COMMANDS.items():
        mod = importlib.import_module(f"neuralsim.cli.{module}")
        assert callable(mod.add_arguments) and callable(mod.run), name


def test_the_core_imports_no_env_but_for_registration():
    """Issue 22 #5: the library core (``neuralsim/``, the CLI aside) never imports ``envs/`` except to register the
    envs on ``import neuralsim``; what it needs from an env it asks the env for through a documented hook (the
    collection policies: ``neuralsim.data.POLICY_HOOK``, offered by ``NeuralSimRoomEnv.collection_policies``)."""
    core = [f for f in _library_files() if (ROOT / "neuralsim") in f.parents]
    assert ROOT / "neuralsim" / "data" / "collection.py" in core
    allowed = {"neuralsim.envs.registration", "neuralsim.envs.registration.register_envs"}
    offenders = [f"{f.relative_to(ROOT)}:{line} imports {name}"
                 for f in core for line, name in _imported_modules(ast.parse(f.read_text(), str(f)))
                 if (name == "neuralsim.envs" or name.startswith("neuralsim.envs.")) and not (
                     f == ROOT / "neuralsim" / "__init__.py" and name in allowed)]
    assert not offenders, "\n".join(offenders)
