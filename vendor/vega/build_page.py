"""Build ``.dvc/offline-plots.html``, the page template ``dvc plots show`` fills in.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from the internet, so offline most of its
charts stay blank without a word. This template carries the three scripts inline (at the
versions pinned in package.json here) and leaves out DVC's ``{scripts}`` placeholder, so the
page draws everything with no network. ``.dvc/config`` points ``plots.html_template`` at it.

Rebuild after changing the versions (the output is committed, so users need no npm):

    cd vendor/vega && npm ci && python build_page.py
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent.parent / ".dvc" / "offline-plots.html"
SCRIPTS = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>imgpipe plots</title>
    <!-- {credits}: BSD-3-Clause, Copyright (c) the University of Washington Interactive
         Data Lab. Inlined by vendor/vega/build_page.py so that the page draws offline. -->
{scripts}
    <style>
        table {{ border-spacing: 15px; }}
        body {{ font-family: sans-serif; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def script(package: str, relative: str) -> tuple[str, str]:
    folder = HERE / "node_modules" / package
    version = json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"]
    code = (folder / relative).read_text(encoding="utf-8")
    # The source maps are not shipped; a browser would only fail to fetch them.
    code = "\n".join(
        line for line in code.splitlines() if not line.startswith("//# sourceMappingURL")
    )
    if "</script" in code.lower():
        raise SystemExit(f"{package} {version} holds '</script' and cannot be inlined")
    return f"{package} {version}", f"<script>\n{code}\n</script>"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = [script(package, relative) for package, relative in SCRIPTS.items()]
    page = PAGE.format(
        credits=", ".join(name for name, _ in built),
        scripts="\n".join(code for _, code in built),
    )
    TARGET.write_text(page, encoding="utf-8")
    logging.info("wrote %s (%d KiB)", TARGET, len(page) // 1024)


if __name__ == "__main__":
    main()
