"""The docs stay usable and true: a short README, links that resolve, short module docstrings, the exit-code
table matching `ExitCode`, and no pointer to a document outside the repository."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from mlopsctl.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 250
DOCSTRING_MAX_LINES = 25
CODE_FOLDERS = ("mlopsctl", "dags", "spark_jobs", "bench")
# documents that live outside the repository: code must state the fact, or point into docs/
OUTSIDE_DOCS = ("FACTS" + ".md", "STYLE" + ".md")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (no Markdown), lowercased, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*)", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: Counter[str] = Counter()
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                links.append(target)
    return links


def test_slug_follows_github() -> None:
    assert slug("How `dev start` starts Airflow") == "how-dev-start-starts-airflow"
    assert slug("2. Build the image (self-hosted Airflow: Helm chart)") == "2-build-the-image-self-hosted-airflow-helm-chart"
    assert slug("**The jobs'** grid_search & friends") == "the-jobs-grid_search--friends"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    links = relative_links(doc)
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if REPO not in (path, *path.parents) or not path.exists():
            broken.append(f"{link}: no such file in the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_links_into_docs() -> None:
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in relative_links(README)}
    assert not {d for d in DOCS} - linked, "every page in docs/ is reachable from the README"


def project_files(folder: str, pattern: str = "*") -> list[Path]:
    """The project's own files under `folder`: no caches or virtualenvs (hidden folders such as the bench's
    .cache, __pycache__), which hold other projects' code."""
    return [
        path for path in sorted((REPO / folder).rglob(pattern))
        if path.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)
    ]


def test_module_docstrings_are_short() -> None:
    long = []
    for folder in CODE_FOLDERS:
        for path in project_files(folder, "*.py"):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
            if doc and len(doc.splitlines()) > DOCSTRING_MAX_LINES:
                long.append(f"{path.relative_to(REPO)} ({len(doc.splitlines())} lines)")
    assert not long, f"module docstrings over {DOCSTRING_MAX_LINES} lines (move the detail to docs/): {long}"


def test_no_file_names_a_document_outside_the_repository() -> None:
    found = []
    for folder in (*CODE_FOLDERS, "tests"):
        for path in project_files(folder):
            data = path.read_bytes().lower()
            found += [f"{path.relative_to(REPO)}: {name}" for name in OUTSIDE_DOCS if name.lower().encode() in data]
    assert not found, found


def test_readme_exit_codes_are_the_exit_code_enum() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Exit codes")
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1]
    assert rows == {code.value: code.name for code in ExitCode}
