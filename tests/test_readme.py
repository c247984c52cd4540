"""What the README promises: its two commands are the ones CI runs, and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_shows_exactly_two_setup_commands_read_by_ci():
    blocks = re.findall(r"<!-- (main-command|test-command) -->\n```bash\n(.+)\n```", README)
    assert [name for name, _ in blocks] == ["main-command", "test-command"]
    assert all(command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
               for _, command in blocks)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command main-command" in ci and "readme_command test-command" in ci


def test_every_linked_document_exists():
    links = re.findall(r"\]\(((?:docs/)[^)#]+)\)", README)
    assert links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert missing == []
