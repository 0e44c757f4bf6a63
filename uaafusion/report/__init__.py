"""The pipeline's report: ``index.html`` and its Markdown twin ``README.md``, with ``figures/``.

A full :func:`build_report` draws the figures (training curves, one panel per test sample; needs
the model and the data) and records what it noted, then :func:`render_report` writes both pages
from the files in the report folder alone: ``evaluation.json`` (required), ``comparison.json``,
``generalisation.json``, ``build.json``, the PNGs in ``figures/`` (linked, not embedded) and the
discussion file named by ``report.discussion``. Both pages come from the same Jinja2 context
(:mod:`uaafusion.report.context`), so they never disagree.

Modules: :mod:`~uaafusion.report.inputs` reads the JSON and text files, :mod:`~uaafusion.report.tables`
and :mod:`~uaafusion.report.differences` make the tables, :mod:`~uaafusion.report.figures` and
:mod:`~uaafusion.report.samples` draw, :mod:`~uaafusion.report.render` fills the templates.
"""

from uaafusion.report.build import build_report, render_report
from uaafusion.report.inputs import read_evaluation
from uaafusion.report.tables import FUSION_METRICS

__all__ = ["FUSION_METRICS", "build_report", "read_evaluation", "render_report"]
