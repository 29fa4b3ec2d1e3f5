"""The README says what is true and where it comes from: every figure in its tables traceable to a
command, every script and document it names present, every option it shows known to the CLI."""

import re
from pathlib import Path

import pytest
import typer.main

from deepfake_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMAND = re.compile(r"(python benchmarks/\w+\.py|benchmarks/\w+\.sh|make demo)")


def tables(text: str) -> list[tuple[int, list[str]]]:
    """(line index of its first row, its rows) of each Markdown table."""
    lines, found, start = text.splitlines(), [], None
    for i, line in enumerate(lines + [""]):
        if line.startswith("|") and start is None:
            start = i
        elif not line.startswith("|") and start is not None:
            found.append((start, lines[start:i]))
            start = None
    return found


@pytest.mark.parametrize("start, rows", tables(README), ids=lambda v: str(v) if isinstance(v, int) else "table")
def test_every_figure_in_a_readme_table_names_the_command_that_measured_it(start, rows):
    """A row's own command column, or the command in the paragraph that introduces the table."""
    before = "\n".join(README.splitlines()[max(0, start - 12):start])
    figures = [row for row in rows[2:] if re.search(r"\d\.\d|\d+ of \d+|\d+x", row)]
    if not figures:
        return
    introduced = COMMAND.search(before)
    for row in figures:
        assert COMMAND.search(row) or introduced, f"no command for: {row}"


def test_the_scripts_and_documents_the_readme_names_exist():
    for path in set(re.findall(r"(benchmarks/\w+\.(?:py|sh)|docs/\w+\.md|examples/\w+\.(?:py|sh))", README)):
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("document", ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))])
def test_the_links_in_the_documents_lead_to_files(document):
    """A relative link resolves from the document's own folder, as GitHub renders it."""
    path = ROOT / document
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if not link.startswith("http"):
            assert (path.parent / link).exists(), f"{document}: {link}"


def test_the_options_in_the_readmes_examples_exist():
    """Each `deepfake CMD ... --option` in a code block is an option of that command."""
    commands = typer.main.get_command(app).commands
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S)
    for line in "\n".join(blocks).splitlines():
        used = re.search(r"(?:deepfake|-m deepfake_cli) (extract|train|evaluate|predict|export)\b(.*)", line)
        if not used:
            continue
        name, rest = used.groups()
        known = {opt for p in commands[name].params for opt in (*p.opts, *p.secondary_opts)}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b", rest.split("#")[0]):
            assert option in known, f"{name} has no {option}: {line.strip()}"
