"""The documents hidiff cites ship with it, and docs/quirks.md names tests that exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CHECKED = ["hidiff", "scripts", "benchmarks", "options", "README.md", "datasets/README.md"]
SUFFIXES = {".py", ".yml", ".yaml", ".md", ".txt", ".toml"}

# Specifications that were written for the developers and are not part of the repository.
NOT_SHIPPED = re.compile(r"\b(?:hidiff|swintormer|ecosystem|offline|design)\.md\b|\breference/|reference spec")
QUIRK = re.compile(r"\bquirks?\s+((?:S?\d+)(?:(?:,\s*|\s+and\s+)S?\d+)*)", re.IGNORECASE)
DOC_CITATION = re.compile(r"\bdocs/([\w-]+\.md)(?:,?\s+(\d+(?:\.\d+)?)\b)?")
TEST_NAME = re.compile(r"`tests/(\w+\.py)::(\w+)`")


def _files() -> list[Path]:
    out = []
    for name in CHECKED:
        path = REPO / name
        if path.is_file():
            out.append(path)
        else:
            out += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and "__pycache__" not in p.parts)
    return out


def _lines():
    for path in _files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"{path.relative_to(REPO)}:{number}", line


def _quirk_numbers() -> set[str]:
    return set(re.findall(r"^\| (S?\d+) \|", (DOCS / "quirks.md").read_text(), re.MULTILINE))


def _sections(doc: str) -> set[str]:
    """Section numbers of a docs file: '## 3. Title' gives '3', '### 3.2 Title' gives '3.2'."""
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (DOCS / doc).read_text(), re.MULTILINE))


def test_the_docs_ship():
    for name in ("quirks.md", "architecture.md", "protocols.md"):
        assert (DOCS / name).is_file(), name


def test_nothing_cites_a_document_that_does_not_ship():
    bad = [f"{where}: {line.strip()}" for where, line in _lines() if NOT_SHIPPED.search(line)]
    assert not bad, "cite docs/ instead:\n" + "\n".join(bad)


def test_every_quirk_citation_names_docs_quirks_md_and_an_existing_row():
    known = _quirk_numbers()
    assert {str(i) for i in range(1, 31)} | {f"S{i}" for i in range(1, 18)} <= known
    bad = []
    for where, line in _lines():
        for match in QUIRK.finditer(line):
            numbers = re.findall(r"S?\d+", match.group(1))
            if "docs/quirks.md" not in line:
                bad.append(f"{where}: '{match.group(0)}' does not say it is docs/quirks.md")
            bad += [f"{where}: quirk {n} is not a row of docs/quirks.md" for n in numbers if n not in known]
    assert not bad, "\n".join(bad)


def test_every_docs_citation_names_an_existing_file_and_section():
    bad = []
    for where, line in _lines():
        for doc, section in DOC_CITATION.findall(line):
            if not (DOCS / doc).is_file():
                bad.append(f"{where}: docs/{doc} does not exist")
            elif section and section not in _sections(doc):
                bad.append(f"{where}: docs/{doc} has no section {section}")
    assert not bad, "\n".join(bad)


def test_docs_link_to_each_other_and_the_readme_links_to_docs():
    readme = (REPO / "README.md").read_text()
    for name in ("quirks.md", "architecture.md", "protocols.md"):
        assert f"docs/{name}" in readme, name
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([\w-]+\.md)\)", doc.read_text()):
            assert (DOCS / target).is_file(), f"{doc.name} links to missing {target}"


@pytest.mark.parametrize("test_file,function", sorted(set(TEST_NAME.findall((DOCS / "quirks.md").read_text()))))
def test_tests_named_in_the_quirk_table_exist(test_file, function):
    path = REPO / "tests" / test_file
    assert path.is_file(), f"docs/quirks.md names tests/{test_file}, which does not exist"
    assert re.search(rf"^def {function}\(", path.read_text(), re.MULTILINE), \
        f"docs/quirks.md names tests/{test_file}::{function}, which does not exist"


def test_the_checks_catch_what_they_are_meant_to_catch():
    """The patterns themselves: a stray citation of each kind is found, a correct one is not."""
    assert NOT_SHIPPED.search("see hidiff.md 3.7") and NOT_SHIPPED.search("(reference/offline.md)")
    assert not NOT_SHIPPED.search("see docs/architecture.md 1.5; datasets/README.md; a reference grid")
    assert [m.group(1) for m in QUIRK.finditer("(quirks 9, 11) and quirk S12")] == ["9, 11", "S12"]
    assert DOC_CITATION.findall("(docs/architecture.md 3.2) docs/quirks.md, quirk 7") == [
        ("architecture.md", "3.2"), ("quirks.md", "")]
    assert {"1", "1.5", "3", "3.3"} <= _sections("architecture.md")
