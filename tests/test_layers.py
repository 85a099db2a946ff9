"""The layers import one way (issue 22 #4): the CLI sits above the library, and no library module imports it.
And one module owns checkpoint files and atomic writes (issue 22 #3): nothing else renames or makes temp files
(``os.replace``, ``Path.replace`` and ``Path.rename`` included).

Checked on the source with ``ast`` (function-level imports included), so an import hidden inside a function
cannot bring the edge back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT, called_names, import_aliases, source_files

CLI = ROOT / "neuralsim" / "cli"


def _library_files() -> list[Path]:
    entry_point = ROOT / "neuralsim" / "__main__.py"  # `python -m neuralsim` is the CLI's entry point, above it
    return [f for f in source_files("neuralsim", "envs", "agents") if CLI not in f.parents and f != entry_point]


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
    collection policies: ``neuralsim.hooks.POLICY_HOOK``, offered by ``NeuralSimRoomEnv.collection_policies``)."""
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
    ``hasattr`` checks on what a model is. The room's collection policies subclass ``CollectionPolicy`` from
    ``neuralsim.hooks``, below both the envs and ``collect``, which asks an env for them."""
    envs = source_files("envs")
    assert ROOT / "envs" / "world_model_env.py" in envs and ROOT / "envs" / "room_policies.py" in envs
    pipeline = ("neuralsim.rollout", "neuralsim.play", "neuralsim.train", "neuralsim.data")
    offenders = [f"{f.relative_to(ROOT)}:{line} imports {name}"
                 for f in envs for line, name in _imported_modules(ast.parse(f.read_text(), str(f)))
                 if any(name == p or name.startswith(p + ".") for p in pipeline)]
    offenders += [f"{f.relative_to(ROOT)}:{node.lineno} calls hasattr" for f in envs
                  for node in ast.walk(ast.parse(f.read_text(), str(f)))
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr"]
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------------ one atomic writer

#: Calls that move or stage files: only ``neuralsim/checkpoints.py`` (the one atomic writer) makes them.
RENAMES_AND_TEMPFILES = {"os.replace", "os.rename", "os.renames", "shutil.move", "tempfile.mkstemp", "tempfile.mktemp",
                         "tempfile.NamedTemporaryFile", "pathlib.Path.replace", "pathlib.Path.rename"}
WRITER = ROOT / "neuralsim" / "checkpoints.py"
#: Files allowed to make such calls anyway, each with its reason (none today).
ALLOWED_OUTSIDE_WRITER: dict[str, str] = {}


def _path_replace(node: ast.Call, aliases: dict[str, str]) -> bool:
    """Whether ``node``, an ``X.replace(...)`` call, can be ``Path.replace(target)``: one argument (positional, or the
    keyword ``target``), and ``X`` neither text (a string or an f-string: ``str.replace`` takes two arguments anyway)
    nor an imported module or name (``dataclasses.replace(obj)``; ``os.replace`` is in ``RENAMES_AND_TEMPFILES``)."""
    receiver = node.func.value
    while isinstance(receiver, ast.Attribute):
        receiver = receiver.value
    one_target = ((len(node.args) == 1 and not isinstance(node.args[0], ast.Starred) and not node.keywords)
                  or (not node.args and [k.arg for k in node.keywords] == ["target"]))
    text = isinstance(node.func.value, ast.JoinedStr) or (
        isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, (str, bytes)))
    return one_target and not text and not (isinstance(receiver, ast.Name) and receiver.id in aliases)


def renames_and_tempfiles(source: str, filename: str = "<string>") -> list[str]:
    """Every call in ``source`` of ``RENAMES_AND_TEMPFILES`` (under any import alias), of a ``.rename(...)`` method
    (``Path.rename``) or of a ``.replace(...)`` method that can be ``Path.replace`` (:func:`_path_replace`), as
    ``"file:line: what"``."""
    tree = ast.parse(source, filename=filename)
    aliases = import_aliases(tree)
    found = []
    for node, name in called_names(tree):
        if name in RENAMES_AND_TEMPFILES:
            found.append(f"{filename}:{node.lineno}: {name}(...)")
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "rename":
            found.append(f"{filename}:{node.lineno}: .rename(...)")
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "replace" and _path_replace(node, aliases):
            found.append(f"{filename}:{node.lineno}: .replace(...) (Path.replace)")
    return found


def test_only_the_checkpoint_owner_renames_or_makes_temp_files():
    """Issue 22 #3: one atomic writer (``neuralsim.checkpoints.atomic_write`` / ``StagedFile`` / ``publish_dir``:
    temp file, fsync, ``os.replace``, fsync of the directory). A module with its own ``os.replace`` or
    ``mkstemp`` skips a step of it (``save_pretrained`` once wrote without fsync), so no other module has one."""
    files = source_files("neuralsim", "envs", "agents", "benchmarks")
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
    "from pathlib import Path\nPath('a').replace('b')",
    "def f(tmp, final):\n    tmp.replace(final)",
    "self.staging.replace(self.path)",
    "(root / 'part').replace(root / 'done')",
    "tmp.replace(target=final)",
    "import pathlib\npathlib.Path.replace(tmp, final)",
    "from pathlib import Path as P\nP.replace(tmp, final)",
])
def test_the_rename_scan_catches(snippet):
    assert renames_and_tempfiles(snippet), snippet


@pytest.mark.parametrize("snippet", [
    '"""os.replace(tmp, path) is done by checkpoints.atomic_write."""',
    "# os.replace(a, b)",
    "name.replace('_', '-')",
    "import dataclasses\ndataclasses.replace(state, step=1)",
    "import dataclasses\ndataclasses.replace(state)",
    "from dataclasses import replace\nreplace(state)",
    "config.replace(**overrides)",
    "model.config.replace(denoise_steps=2)",
    "key.replace(new, old)",
    "'a-b'.replace(sep)",
    "f'{a}-b'.replace(sep)",
    "b'a-b'.replace(sep)",
    "now.replace(*fields)",
    "import tempfile\ntempfile.mkdtemp()",
    "from neuralsim.checkpoints import atomic_write\natomic_write(path, write)",
])
def test_the_rename_scan_passes(snippet):
    assert not renames_and_tempfiles(snippet), snippet
