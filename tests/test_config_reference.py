"""The README's configuration reference cannot drift from the settings class."""

from __future__ import annotations

import re

from edge_ai.config import ApiKey, Settings
from tests.conftest import ROOT


def _table_names(section: str, header: str) -> set[str]:
    """Backticked names in the first column of the table that starts with `header`."""
    table = section.split(header, 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        names.update(re.findall(r"`([a-z0-9_]+)`", first))
    return names


def test_readme_configuration_lists_every_setting_and_nothing_else():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert _table_names(section, "| setting | default | meaning |") == set(Settings.model_fields)
    assert _table_names(section, "| key setting | default | meaning |") == set(ApiKey.model_fields)


def test_every_setting_has_a_description_or_an_obvious_name():
    undocumented = [n for n, f in Settings.model_fields.items() if not f.description and n not in {"host", "port"}]
    assert undocumented == []
