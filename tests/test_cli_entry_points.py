"""Every console script of pyproject.toml names an importable callable ``main``; the script shims still run."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest

from conftest import PY, REPO, run_env
from procs import run_checked

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_command_set_is_complete():
    assert sorted(SCRIPTS) == ["hidiff-deblur", "hidiff-evaluate", "hidiff-export", "hidiff-prepare",
                               "hidiff-profile", "hidiff-schema", "hidiff-sweep", "hidiff-test", "hidiff-train"]


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_script_target_is_a_main_taking_argv(command):
    module_name, _, attr = SCRIPTS[command].partition(":")
    assert attr == "main", f"{command}: entry point should be '<module>:main'"
    main = getattr(importlib.import_module(module_name), attr)
    assert callable(main)
    assert "argv" in inspect.signature(main).parameters, f"{command}: main(argv=None) lets tests call it"


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_command_also_runs_as_a_module(command):
    """``python -m hidiff.cli.evaluate`` did nothing and exited 0: the module had no ``__main__`` block."""
    source = importlib.util.find_spec(SCRIPTS[command].partition(":")[0]).origin
    assert 'if __name__ == "__main__"' in Path(source).read_text(encoding="utf-8"), source


@pytest.mark.parametrize("command", ["hidiff-evaluate", "hidiff-profile", "hidiff-prepare"])
def test_moved_commands_answer_help_under_their_name(command, capsys):
    module = importlib.import_module(SCRIPTS[command].partition(":")[0])
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {command}")


@pytest.mark.parametrize("script", ["evaluate.py", "profile.py", "prepare_data.py"])
def test_script_shims_run_from_a_checkout(script, tmp_path):
    proc = run_checked([PY, REPO / "scripts" / script, "--help"], cwd=tmp_path, env=run_env(), timeout=120)
    assert proc.stdout.startswith("usage: hidiff-")


def test_missing_optional_package_names_its_extra_before_anything_is_written(tmp_path):
    """hidiff-prepare --lmdb without the lmdb package: exit 1, the extra named, no output folder created."""
    src = tmp_path / "GOPRO_Large"
    src.mkdir()
    code = ("import sys; sys.modules['lmdb'] = None  # as if the package were not installed\n"
            "from hidiff.cli.prepare import main\n"
            f"sys.exit(main(['gopro', '--src', {str(src)!r}, '--dst', {str(tmp_path / 'out')!r}, '--lmdb']))")
    proc = run_checked([PY, "-c", code], env=run_env(), timeout=120, returncode=1)
    assert "pip install 'hidiff[lmdb]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_onnx_export_without_the_extra_names_it(monkeypatch):
    from hidiff.errors import HidiffError
    from hidiff.utils.optional import require

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(HidiffError, match=r"ONNX export needs the optional package 'onnxscript'.*hidiff\[export\]"):
        require("onnxscript", "export", "ONNX export")
    assert require("json", "none", "stdlib").dumps([1]) == "[1]"
