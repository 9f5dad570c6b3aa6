"""The README is the user's manual: its configuration table must match the settings."""

import re
from pathlib import Path

from config.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    documented = set(re.findall(r"`(TICKFLOW_[A-Z0-9_]+)`", README.read_text()))
    expected = {f"TICKFLOW_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README table"
    stale = {v for v in documented - expected if not v.startswith("TICKFLOW_TEST_")}
    assert stale == set(), "README documents settings that do not exist"


def test_the_readme_names_the_two_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
