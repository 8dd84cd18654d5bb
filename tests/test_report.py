"""The run report's quota plots: the per-second bucketing, the rendering, and a real browser.

The bucketing (``pipeline.progress.QuotaSeconds`` and ``ProgressStats``) is tested as pure code
with an injected clock; the file fallback reads real result and dead-letter files; the HTML is
rendered by headless Chromium (``--dump-dom``) and the plots are checked in the DOM it built,
for a synthetic report and for the report of a real run against the simulator.
"""

from __future__ import annotations

import html.parser
import json
import shutil
import statistics
import subprocess

import pytest

from pipeline.report import page as report
from pipeline.report import quota as report_quota
from pipeline.outputs import request_timings
from pipeline.progress import ProgressStats, QuotaSeconds
from pipeline.report.svg import FRAME, HEIGHT
from tests.conftest import EXAMPLES, write_jsonl
from transforms.records import CallStats, DeadLetter, Result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian package `chromium`); "
    "CI installs it")
QUOTA_PLOTS = ("requests_rate", "tokens_rate", "rate_limited_rate", "throttled_rate")


def _result(id_, stats, finished_at, cached=False):
    return Result(id=id_, response="ok", model="m", finish_reason="stop",
                  started_at=finished_at - 1, finished_at=finished_at, ticket={"id": id_},
                  cached=cached, stats=stats)


# -- bucketing --------------------------------------------------------------------------------

def test_one_ticket_is_spread_over_its_attempt_times():
    q = QuotaSeconds()
    q.ticket(attempts=3, rate_limited=2, prompt_tokens=100, completion_tokens=20,
             throttled_secs=2.0, first_at=1000.5, last_at=1002.5)
    # Attempts at 1000.5, 1001.5, 1002.5; the two 429s on the first two; tokens on the last;
    # the 2 s of waiting spread over [998.5, 1002.5].
    assert q.seconds == {998: [0, 0, 0, 0, 0.25], 999: [0, 0, 0, 0, 0.5],
                         1000: [1, 0, 0, 1, 0.5], 1001: [1, 0, 0, 1, 0.5],
                         1002: [1, 100, 20, 0, 0.25]}
    single = QuotaSeconds()
    single.ticket(attempts=1, rate_limited=0, prompt_tokens=7, completion_tokens=0,
                  throttled_secs=0.0, first_at=5.9, last_at=5.9)
    assert single.seconds == {5: [1, 7, 0, 0, 0]}


def test_progress_stats_buckets_records_at_their_attempt_times_with_an_injected_clock():
    now = [2000.7]
    stats = ProgressStats(wall=lambda: now[0])
    # Answered at 1003 but sent at 1001.2: the request and its tokens count at 1001.
    stats.finished(_result("a", CallStats(attempts=1, prompt_tokens=30, completion_tokens=12,
                                          first_attempt_at=1001.2, last_attempt_at=1001.2),
                           finished_at=1003.0))
    # From the response store: nothing was sent, nothing counts against the quota.
    stats.finished(_result("b", CallStats(prompt_tokens=30, completion_tokens=12), 1003.0,
                           cached=True))
    # A dead letter without attempt times is placed by the clock.
    stats.finished(DeadLetter(id="c", stage="llm", reason="rate_limited", error_class="X",
                              message="m", stats=CallStats(attempts=2, rate_limited=2,
                                                           throttled_secs=0.5)))
    # A parse dead letter sent nothing.
    stats.finished(DeadLetter(id="d", stage="parse", reason="invalid_json", error_class="X",
                              message="m"))
    stats.add("requests", 3)  # counter increments do not move the quota seconds
    snap = stats.snapshot()
    assert stats.quota_seconds() == {1001: [1, 30, 12, 0, 0], 2000: [2, 0, 0, 2, 0.5]}
    assert snap["requests"] == 3
    assert snap["per_second"] == {1003: (2, 0), 2000: (0, 2)}
    stats.reset()
    assert stats.quota_seconds() == {}


def test_quota_rows_are_gap_free_from_the_start_of_the_run():
    rows = report_quota.quota_rows({102: [3, 300, 30, 1, 0.5], 104: [1, 10, 1, 0, 0]},
                                   start_wall=100.4)
    assert [r.t for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert rows[2] == (2.0, 3, 300, 30, 1, 0.5) and rows[3] == (3.0, 0, 0, 0, 0, 0)
    unknown = report_quota.quota_rows({7: [1, 2, 1, 0, 0]}, start_wall=0, known=False)
    assert unknown == [(0.0, 1, 2, 1, None, None)]


def test_the_file_fallback_reads_request_times_and_tokens(tmp_path):
    sent = 1_800_000_010.25
    answered = _result("a", CallStats(attempts=1, latency_ms=500, prompt_tokens=20,
                                      completion_tokens=5, first_attempt_at=sent,
                                      last_attempt_at=sent), finished_at=sent + 0.5)
    cached = _result("b", CallStats(prompt_tokens=9), finished_at=sent, cached=True)
    dead = DeadLetter(id="c", stage="llm", reason="server_error", error_class="X", message="m",
                      stats=CallStats(attempts=2, first_attempt_at=sent + 1,
                                      last_attempt_at=sent + 2))
    write_jsonl(tmp_path / "results-r1-00000-of-00001.jsonl",
                [answered.to_json(), cached.to_json()])
    write_jsonl(tmp_path / "dead_letter-r1-00000-of-00001.jsonl", [dead.to_json()])
    timings = request_timings(str(tmp_path))
    assert sorted((round(t.last_at, 2), t.attempts, t.prompt_tokens, t.completion_tokens)
                  for t in timings) == [(round(sent, 2), 1, 20, 5), (round(sent + 2, 2), 2, 0, 0)]
    rows = report_quota.quota_from_timings(timings, start_wall=sent - 0.25)
    assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (1, 20, 5), (1, 0, 0), (1, 0, 0)]
    assert all(r.rate_limited is None and r.throttled_secs is None for r in rows)
    page = report.render({"ledger_balanced": True}, [], [], report_quota.Quota(
        rows, report_quota.SOURCE_FILES, requests_per_minute=60))
    assert "the written results and dead letters" in page
    assert page.count("not in the written files") == 2


# -- rendering ----------------------------------------------------------------------------------

class _Dom(html.parser.HTMLParser):
    """Per plot: the <svg>'s attributes, its elements (tag, attrs) and its texts."""

    def __init__(self):
        super().__init__()
        self.plots, self.captions, self.external = {}, {}, []
        self._plot = None
        self._caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "link", "img", "iframe") or "src" in attrs or "href" in attrs:
            self.external.append((tag, attrs))
        if tag == "figure" and "plot" in (attrs.get("class") or ""):
            self._plot = attrs["data-plot"]
            self.plots[self._plot] = {"svg": None, "elements": [], "texts": []}
            self.captions[self._plot] = ""
        elif self._plot and tag == "svg":
            self.plots[self._plot]["svg"] = attrs
        elif self._plot and tag == "figcaption":
            self._caption = True
        elif self._plot:
            self.plots[self._plot]["elements"].append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._plot = None
        elif tag == "figcaption":
            self._caption = False

    def handle_data(self, data):
        if self._plot and self._caption:
            self.captions[self._plot] += data
        elif self._plot:
            self.plots[self._plot]["texts"].append(data)

    def of(self, plot, tag, cls):
        return [a for t, a in self.plots[plot]["elements"]
                if t == tag and cls in (a.get("class") or "").split()]


def _value_of_y(svg_attrs, y):
    """A y coordinate back to the value it stands for (see report_svg.FRAME)."""
    y0, y1 = HEIGHT - FRAME["bottom"], FRAME["top"]
    return (y0 - float(y)) / (y0 - y1) * float(svg_attrs["data-y-max"])


def _series(dom, plot, key=None):
    (line,) = [a for a in dom.of(plot, "polyline", "data")
               if key is None or a["data-series"] == key]
    return [_value_of_y(dom.plots[plot]["svg"], p.split(",")[1]) for p in line["points"].split()]


def _synthetic_page():
    # 40 s: ramp up, 10 requests/s (limit 10/s), a burst of 429s at 20 s, waits throughout;
    # 100 prompt + 50 completion tokens a request.
    rows = [report_quota.QuotaRow(float(t), min(10, 3 * t), 100.0 * min(10, 3 * t),
                                  50.0 * min(10, 3 * t), 4.0 if t == 20 else 0.0,
                                  12.0 if 4 <= t < 36 else 1.0) for t in range(40)]
    summary = {"ledger_balanced": True, "rate_limited": 4, "throttled_secs": 390,
               "output": "out/run1", "model": "m"}
    quota = report_quota.Quota(rows, report_quota.SOURCE_LIVE, requests_per_minute=600,
                               tokens_per_minute=0, max_tokens=200, concurrency=16)
    return report.render(summary, [(float(t), 9, 0) for t in range(40)], [], quota)


def test_render_draws_the_limit_where_it_is_configured_and_says_so_where_not():
    dom = _Dom()
    dom.feed(_synthetic_page())
    assert set(QUOTA_PLOTS) <= set(dom.plots) and not dom.external
    (limit,) = dom.of("requests_rate", "line", "limit")
    assert float(limit["data-limit"]) == 10
    assert _value_of_y(dom.plots["requests_rate"]["svg"], limit["y1"]) == pytest.approx(10, 0.01)
    assert max(_series(dom, "requests_rate")) == pytest.approx(10, abs=0.1)
    # 378 requests over the 39 s from the first (t=1) to the last (t=39).
    assert "(96.9% of the limit; at 90% of it or more in 37 of" in dom.captions["requests_rate"]
    assert not dom.of("tokens_rate", "line", "limit")
    assert "(no limit configured)" in dom.plots["tokens_rate"]["texts"]
    assert "No limit configured (--tokens_per_minute 0)" in dom.captions["tokens_rate"]
    # Used: 150 tokens a request; admitted: 100 prompt + --max_tokens 200 per request not 429'd.
    assert max(_series(dom, "tokens_rate", "tokens")) == pytest.approx(1500, abs=10)
    admitted = _series(dom, "tokens_rate", "tokens_admitted")
    assert max(admitted) == pytest.approx(3000, abs=20)
    assert admitted[20] == pytest.approx(1000 + 6 * 200, abs=20)
    assert max(_series(dom, "rate_limited_rate")) == pytest.approx(4, abs=0.05)
    assert "At most 16" in dom.captions["throttled_rate"]
    for plot in QUOTA_PLOTS:
        assert "time since start (s)" in dom.plots[plot]["texts"], plot


def test_the_tokens_plot_compares_the_admitted_tokens_with_the_limit():
    rows = [report_quota.QuotaRow(float(t), 10.0, 1000.0, 500.0, 0.0, 0.0) for t in range(20)]
    quota = report_quota.Quota(rows, report_quota.SOURCE_LIVE, tokens_per_minute=180_000,
                               max_tokens=200)
    dom = _Dom()
    dom.feed(report.render({}, [], [], quota))
    (limit,) = dom.of("tokens_rate", "line", "limit")
    assert float(limit["data-limit"]) == 3000
    caption = dom.captions["tokens_rate"]
    assert "Used (prompt + completion, as the answers reported them): mean 1,500 tokens/s" \
        in caption and "(50% of the limit" in caption
    assert "mean 3,000 tokens/s over the 20 s from the first to the last (100% of the limit; " \
        "at 90% of it or more in 20 of those seconds)" in caption
    assert "no limit configured" in " ".join(dom.plots["requests_rate"]["texts"])


def test_a_long_run_is_binned_and_labelled_in_hours():
    rows = [report_quota.QuotaRow(float(t), 5.0, 50.0, 10.0, 0.0, 0.0) for t in range(5 * 3600)]
    page = report.render({}, [], [], report_quota.Quota(rows, report_quota.SOURCE_LIVE))
    dom = _Dom()
    dom.feed(page)
    assert len(dom.of("requests_rate", "polyline", "data")[0]["points"].split()) <= 600
    assert "averaged over 30-second bins" in dom.captions["requests_rate"]
    assert "time since start (h)" in dom.plots["requests_rate"]["texts"]
    assert max(_series(dom, "requests_rate")) == pytest.approx(5, abs=0.05)


def test_without_quota_data_the_report_has_no_quota_section():
    page = report.render({"ledger_balanced": True}, [], [])
    assert "Provider quota" not in page and 'data-plot="throughput"' in page


# -- in a real browser ------------------------------------------------------------------------

def _chromium_dom(page_path, tmp_path, screenshot=None) -> _Dom:
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    url = page_path.resolve().as_uri()
    proc = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "<svg" in proc.stdout, proc.stderr[-2000:]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1200,3000", url],
                       capture_output=True, timeout=120, check=True)
    dom = _Dom()
    dom.feed(proc.stdout)
    return dom


@needs_chromium
def test_chromium_renders_every_quota_plot_with_axes_series_and_limit(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_synthetic_page(), encoding="utf-8")
    shot = tmp_path / "report.png"
    dom = _chromium_dom(page, tmp_path, screenshot=shot)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    assert not dom.external
    for plot in QUOTA_PLOTS:
        assert dom.plots[plot]["svg"] is not None, plot
        assert len(dom.of(plot, "polyline", "data")) == (2 if plot == "tokens_rate" else 1)
        assert len(dom.of(plot, "text", "axis-label")) == 2, plot
    (limit,) = dom.of("requests_rate", "line", "limit")
    assert limit["data-limit"] == "10"
    assert any("limit 10 requests/s" in t for t in dom.plots["requests_rate"]["texts"])
    assert "requests / s" in dom.plots["requests_rate"]["texts"]
    assert "429 answers / s" in dom.plots["rate_limited_rate"]["texts"]


@needs_chromium
def test_a_simulated_run_at_600_per_minute_plots_requests_along_the_10_per_second_limit(
        run_pipeline, tmp_path):
    # 150 of the examples: about 15 s at the limit (the whole file takes 30 s).
    lines = (EXAMPLES / "tickets.jsonl").read_text(encoding="utf-8").splitlines()[:150]
    tickets = write_jsonl(tmp_path / "tickets.jsonl", lines)
    run = run_pipeline("--input", str(tickets), "--simulate", "--requests_per_minute", "600",
                       "--quiet")
    assert run.returncode == 0, run.stderr
    assert run.summary()["succeeded"] == 150
    dom = _chromium_dom(run.output / "report.html", tmp_path)
    (limit,) = dom.of("requests_rate", "line", "limit")
    assert float(limit["data-limit"]) == 10
    svg = dom.plots["requests_rate"]["svg"]
    assert _value_of_y(svg, limit["y1"]) == pytest.approx(10, rel=0.01)
    values = _series(dom, "requests_rate")
    assert sum(values) == pytest.approx(150, abs=1)  # every request, once
    busy = values[2:-2]  # without the ramp-up and the last partial seconds
    assert len(busy) >= 8 and 8.5 <= statistics.median(busy) <= 11.5, values
    assert max(values) <= 10 * 1.6, values  # the limiter allows a small burst, not more
    assert "Source: this process&#x27;s live counters" in (
        run.output / "report.html").read_text(encoding="utf-8")
    waiting = _series(dom, "throttled_rate")
    assert statistics.median(waiting[2:-2]) > 1, waiting  # tickets were held back
    assert not dom.of("tokens_rate", "line", "limit")
    assert json.loads((run.output / "summary.json").read_text())["rate_limited"] == 0
