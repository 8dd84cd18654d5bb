"""``report.html``: the run's page (:mod:`pipeline.report.page`), its provider-quota section
(:mod:`pipeline.report.quota`) and the inline SVG plots (:mod:`pipeline.report.svg`)."""
