"""Both pages from one context: the discussion as Markdown, figures linked from figures/."""

from __future__ import annotations

import re

import pytest

from tests.report.fake_project import read_tables, texts, write_params
from uaafusion.config import load_params
from uaafusion.errors import DataError
from uaafusion.paths import ProjectPaths
from uaafusion.report import render_report

DISCUSSION = """### Why

Ours <wins> on `VIF`
because of A.

| method | VIF | verdict |
|---|---:|---|
| ours | 0.81 | **worse** |
| maximum | 1.04 | best |

- first
  continued
- second

```sh
uaafusion train --params p.yaml
```
"""


def test_discussion_tables_render_as_tables_and_the_twin_keeps_the_text(project: ProjectPaths) -> None:
    (project.root / "notes.md").write_text(DISCUSSION)
    write_params(project.params, report={"samples": 0, "discussion": "notes.md"})
    html_text = render_report(load_params(project.params), project).read_text()
    discussion = html_text[html_text.index("<h2>Discussion</h2>"):html_text.index("<h2>Training</h2>")]
    (table,) = read_tables(discussion)
    assert [texts(row) for row in table] == [["method", "VIF", "verdict"], ["ours", "0.81", "worse"],
                                              ["maximum", "1.04", "best"]]
    assert "<h3>Why</h3>\n<p>Ours &lt;wins&gt; on <code>VIF</code>\nbecause of A.</p>" in discussion
    assert re.search(r"<ul>\s*<li>first\s+continued</li>\s*<li>second</li>\s*</ul>", discussion)
    assert '<pre><code class="language-sh">uaafusion train --params p.yaml\n</code></pre>' in discussion
    markdown = (project.reports / "README.md").read_text()
    assert f"## Discussion\n\n{DISCUSSION.strip()}\n\n## Training\n" in markdown


def test_a_missing_discussion_file_is_named(project: ProjectPaths) -> None:
    write_params(project.params, report={"samples": 0, "discussion": "notes/missing.md"})
    with pytest.raises(DataError, match=r"report.discussion.*missing\.md"):
        render_report(load_params(project.params), project)


def test_figures_are_linked_from_both_pages_and_exist(built_report: ProjectPaths) -> None:
    html_text = (built_report.reports / "index.html").read_text()
    markdown = (built_report.reports / "README.md").read_text()
    linked = re.findall(r'<img [^>]*src="([^"]+)"', html_text)
    assert sorted(linked) == sorted(re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown))
    assert sorted(linked) == ["figures/sample_s1.png", "figures/sample_s2.png", "figures/training_loss.png",
                              "figures/validation_rounds.png"]
    for source in linked:
        assert (built_report.reports / source).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image" not in html_text and len(html_text) < 50_000
    assert "dvc repro" in html_text and "dvc repro" in markdown and "```yaml" in markdown
