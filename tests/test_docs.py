"""The documentation stays true: the settings reference is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from memory_service.config import settings_reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_reference_is_current() -> None:
    text = (DOCS / "operations.md").read_text()
    between = text.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert between == settings_reference(), (
        "docs/operations.md is stale: regenerate it with `memory-service settings-reference`"
    )


def test_every_guide_exists_and_is_linked_from_the_readme() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    for guide in ("architecture", "operations", "troubleshooting", "migration"):
        assert (DOCS / f"{guide}.md").exists()
        assert f"docs/{guide}.md" in readme
