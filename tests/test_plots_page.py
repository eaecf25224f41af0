"""The page `dvc plots show` writes draws offline: its scripts are inline, nothing is fetched."""

from __future__ import annotations

import configparser
import re

from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / ".dvc" / "offline-plots.html"
EXTERNAL = re.compile(
    r"""<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I
)


def test_the_project_points_dvc_at_the_offline_template():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    assert config["plots"]["html_template"] == TEMPLATE.name
    assert TEMPLATE.is_file()


def test_the_template_carries_vega_inline_and_no_dvc_script_tags():
    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page
    # DVC's {scripts} placeholder would add its <script src="https://..."> tags back.
    assert "{scripts}" not in page
    assert not EXTERNAL.search(page)
    for library in ("vega 5.", "vega-lite 5.", "vega-embed 6."):
        assert library in page
    assert page.count("<script>") == 3
    assert "vegaEmbed" in page and "vegaLite" in page


def test_the_external_reference_check_catches_what_dvc_writes_by_default():
    assert EXTERNAL.search('<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>')
    assert EXTERNAL.search("<link href='//fonts.example/x.css'>")
    assert not EXTERNAL.search('<img src="static/workspace_reports_prepare_preview.png">')
