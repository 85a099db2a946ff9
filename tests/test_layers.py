"""The layers import one way (issue 22 #4): the CLI sits above the library, and no library module imports it.
And one module owns checkpoint files and atomic writes (issue 22 #3): nothing else renames or makes temp files.

Checked on the source with ``ast`` (function-level imports included), so an import hidden inside a function
cannot bring the edge back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_the_envs_import_neither_rollout_nor_data_and_duck_type_no_model():
    """Issue 22 #1, #2, #4: the envs reach a world model through ``neuralsim.session`` (the one dream session and its
    ``DreamModel`` protocol), never through the pipeline (``rollout``, ``play``, ``train``, ``data``), and hold no
    ``hasattr`` checks on what a model is. The one exception: the room's collection policies subclass
    ``neuralsim.data.collection.CollectionPolicy``, the hook ``collect`` asks an env for."""
    envs = sorted(f for f in (ROOT / "envs").rglob("*.py") if "__pycache__" not in f.parts)
    assert ROOT / "envs" / "world_model_env.py" in envs
    pipeline = ("neuralsim.rollout", "neuralsim.play", "neuralsim.train", "neuralsim.data")
    allowed = {("room_policies.py", "neuralsim.data.collection"),
               ("room_policies.py", "neuralsim.data.collection.CollectionPolicy")}
    offenders = [f"{f.relative_to(ROOT)}:{line} imports {name}"
                 for f in envs for line, name in _imported_modules(ast.parse(f.read_text(), str(f)))
                 if any(name == p or name.startswith(p + ".") for p in pipeline) and (f.name, name) not in allowed]
    offenders += [f"{f.relative_to(ROOT)}:{node.lineno} calls hasattr" for f in envs
                  for node in ast.walk(ast.parse(f.read_text(), str(f)))
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"]
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------------ one atomic writer

#: Calls that move or stage files: only ``neuralsim/checkpoints.py`` (the one atomic writer) makes them.
RENAMES_AND_TEMPFILES = {"os.replace", "os.rename", "os.renames", "shutil.move", "tempfile.mkstemp", "tempfile.mktemp",
                         "tempfile.NamedTemporaryFile"}
WRITER = ROOT / "neuralsim" / "checkpoints.py"
#: Files allowed to make such calls anyway, each with its reason (none today).
ALLOWED_OUTSIDE_WRITER: dict[str, str] = {}


def renames_and_tempfiles(source: str, filename: str = "<string>") -> list[str]:
    """Every call in ``source`` of ``RENAMES_AND_TEMPFILES`` (under any import alias) or of a ``.rename(...)`` method
    (``Path.rename``), as ``"file:line: what"``. (``Path.replace`` cannot be told from ``str.replace`` here.)"""
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}  # local name -> the module or module.attr it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, func = [], node.func
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if isinstance(func, ast.Name):
            parts.append(func.id)
            head, *rest = reversed(parts)
            name = ".".join([aliases.get(head, head), *rest])
            if name in RENAMES_AND_TEMPFILES:
                found.append(f"{filename}:{node.lineno}: {name}(...)")
                continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "rename":
            found.append(f"{filename}:{node.lineno}: .rename(...)")
    return found


def test_only_the_checkpoint_owner_renames_or_makes_temp_files():
    """Issue 22 #3: one atomic writer (``neuralsim.checkpoints.atomic_write`` / ``StagedFile`` / ``publish_dir``:
    temp file, fsync, ``os.replace``, fsync of the directory). A module with its own ``os.replace`` or
    ``mkstemp`` skips a step of it (``save_pretrained`` once wrote without fsync), so no other module has one."""
    files = sorted(f for d in ("neuralsim", "envs", "agents", "benchmarks") for f in (ROOT / d).rglob("*.py")
                   if "__pycache__" not in f.parts)
    assert WRITER in files and ROOT / "neuralsim" / "model.py" in files and ROOT / "neuralsim" / "play.py" in files
    offenders = [hit for f in files if f != WRITER and str(f.relative_to(ROOT)) not in ALLOWED_OUTSIDE_WRITER
                 for hit in renames_and_tempfiles(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not offenders, ("write files with neuralsim.checkpoints (atomic_write, atomic_write_json, StagedFile, "
                           "publish_dir, ...), not by hand:\n" + "\n".join(offenders))
    assert renames_and_tempfiles(WRITER.read_text(encoding="utf-8")), "the scan no longer sees the writer's own calls"


@pytest.mark.parametrize("snippet", [
    "import os\nos.replace(a, b)",
    "import os as _os\n_os.rename(a, b)",
    "from os import replace\nreplace(a, b)",
    "from os import rename as mv\nmv(a, b)",
    "import tempfile\nfd, tmp = tempfile.mkstemp()",
    "from tempfile import NamedTemporaryFile\nNamedTemporaryFile('w', delete=False)",
    "import shutil\nshutil.move(a, b)",
    "from pathlib import Path\nPath('a').rename('b')",
    "def f(tmp):\n    tmp.rename(final)",
])
def test_the_rename_scan_catches(snippet):
    assert renames_and_tempfiles(snippet), snippet


@pytest.mark.parametrize("snippet", [
    '"""os.replace(tmp, path) is done by checkpoints.atomic_write."""',
    "# os.replace(a, b)",
    "name.replace('_', '-')",
    "import dataclasses\ndataclasses.replace(state, step=1)",
    "import tempfile\ntempfile.mkdtemp()",
    "from neuralsim.checkpoints import atomic_write\natomic_write(path, write)",
])
def test_the_rename_scan_passes(snippet):
    assert not renames_and_tempfiles(snippet), snippet
