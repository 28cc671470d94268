"""hidiff's import layers hold (docs/architecture.md, "Layers"), and every function-level import says why."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    # run from the repository root, so the hidiff analysed is this checkout's
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, "lint-imports (pyproject.toml [tool.importlinter]) found broken contracts:\n" + report
    assert "0 broken" in report and "hidiff layers KEPT" in report, report


def _function_level_imports(path: Path):
    """(line number, source text) of every import inside a function body of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines), filename=str(path))

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child.lineno, " ".join(lines[child.lineno - 1:child.end_lineno])
            yield from walk(child, inside)

    yield from walk(tree, False)


def test_every_function_level_import_says_why_it_is_deferred():
    bad = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
           for path in sorted((REPO / "hidiff").rglob("*.py"))
           for number, line in _function_level_imports(path) if "# deferred: " not in line]
    assert not bad, ("import at module level, or mark a real cycle or a heavy optional dependency with "
                     "'# deferred: <reason>':\n" + "\n".join(bad))
