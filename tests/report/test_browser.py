"""The pages as a browser shows them: headless chromium screenshots of a built report and of the
committed MSRS report (skipped without chromium: apt-get install -y chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_ROOT
from tests.report.fake_project import read_tables
from uaafusion.paths import ProjectPaths

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
MSRS_REPORT = REPO_ROOT / "reports" / "msrs"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def screenshot(page: Path, folder: Path, height: int = 2000) -> np.ndarray:
    """The top ``1200 x height`` pixels of ``page`` in headless chromium: ``float64 (height, 1200, 3)``."""
    out = folder / f"{page.parent.name}.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={folder / 'profile'}", f"--screenshot={out}",
               f"--window-size=1200,{height}", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"
    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (height, 1200)
    assert pixels.std() > 20 and (pixels < 240).any(axis=-1).mean() > 0.05, "the rendered page is (almost) blank"
    return pixels


def test_built_report_renders_with_its_best_cells_tinted(built_report: ProjectPaths, tmp_path: Path) -> None:
    pixels = screenshot(built_report.reports / "index.html", tmp_path)
    green = (np.abs(pixels - np.array([217, 242, 217])).sum(axis=-1) < 6).sum()  # best cells: #d9f2d9
    assert green > 200


@pytest.mark.skipif(not (MSRS_REPORT / "index.html").is_file(), reason="no committed MSRS report")
def test_committed_msrs_report_renders_with_its_discussion_tables_as_tables(tmp_path: Path) -> None:
    screenshot(MSRS_REPORT / "index.html", tmp_path)
    html_text = (MSRS_REPORT / "index.html").read_text()
    for source in re.findall(r'<img [^>]*src="([^"]+)"', html_text):
        assert (MSRS_REPORT / source).is_file(), f"{source} is linked but missing"
    discussion = html_text[html_text.index("<h2>Discussion</h2>"):html_text.index("<h2>Training</h2>")]
    source = (MSRS_REPORT / "discussion.md").read_text()
    table_count = len(re.findall(r"^\|(?: *:?-{3,}:? *\|)+ *$", source, flags=re.MULTILINE))
    assert table_count > 0 and len(read_tables(discussion)) == table_count
    assert not re.search(r"<p>\|", discussion)  # no table left as a paragraph of pipes
