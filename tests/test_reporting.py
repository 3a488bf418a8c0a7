"""Issue-5 outputs: severities, JUnit, GitHub, baseline comparison and `credaudit diff`, HTML."""

import json
import re

import numpy as np
import polars as pl
import pytest

from credaudit.baseline import compare_reports, load_report
from credaudit.errors import DataReadError, UsageError
from credaudit.report.github import annotations
from credaudit.report.model import AuditReport
from credaudit.report.terminal import render_terminal
from tests.conftest import make_clusterable, symmetric_t, write_table
from tests.helpers import invoke


def noisy_file(tmp_path, name="data.parquet", rate=0.15, n=600, seed=0):
    x, true, observed = make_clusterable(n, 3, symmetric_t(3, rate) if rate else None, seed)
    names = np.array(["alpha", "beta", "gamma"])
    frame = pl.DataFrame(
        {"text": [f"row {i} <b>&amp;</b>" for i in range(n)], "label": names[observed].tolist(), "emb": x.tolist()}
    )
    return write_table(frame, tmp_path / name)


def scan(path, out, *extra, expect_exit=0, env=None):
    return invoke(["scan", path, "--embedding-col", "emb", "--out", out, *extra], expect_exit=expect_exit, env=env)


def test_warnings_are_a_verdict_of_their_own_and_fail_only_when_strict(tmp_path):
    data = noisy_file(tmp_path)
    result = scan(data, tmp_path / "o", "--warn-max-noise-rate", "0.05", "--format", "json")
    report = json.loads(result.stdout)
    check = next(c for c in report["checks"] if c["id"] == "max_noise_rate")
    assert check["status"] == "warn" and check["warn_threshold"] == 0.05 and report["verdict"] == "warn"
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert markdown.startswith("# credaudit: ⚠️ WARN") and "- ⚠️ max_noise_rate: noise rate" in markdown
    assert 'class="banner warn"' in (tmp_path / "o" / "report.html").read_text()
    quiet = scan(data, tmp_path / "o", "--warn-max-noise-rate", "0.05", "--format", "quiet").stdout
    assert quiet.startswith("WARN ")
    scan(data, tmp_path / "o", "--warn-max-noise-rate", "0.05", "--strict", "--format", "quiet", expect_exit=1)
    both = json.loads(
        scan(
            data,
            tmp_path / "o",
            "--warn-max-noise-rate",
            "0.05",
            "--max-noise-rate",
            "0.08",
            "--format",
            "json",
            expect_exit=1,
        ).stdout
    )
    assert next(c for c in both["checks"] if c["id"] == "max_noise_rate")["status"] == "fail"
    markdown = (tmp_path / "o" / "report.md").read_text()
    assert "- ❌ max_noise_rate" in markdown


def test_severities_from_the_config_file(tmp_path):
    data = noisy_file(tmp_path)
    cfg = tmp_path / "ci.toml"
    cfg.write_text("[gates]\nwarn_min_credibility = 0.99\nmax_flagged = 0.5\nstrict = true\n")
    scan(data, tmp_path / "o", "--config", cfg, "--format", "quiet", expect_exit=1)
    scan(data, tmp_path / "o", "--config", cfg, "--warn-min-credibility", "0.1", "--format", "quiet")


def test_junit_is_parsed_by_a_standard_reader(tmp_path):
    from junitparser import Failure, JUnitXml, Skipped

    data = noisy_file(tmp_path)
    junit = tmp_path / "reports" / "junit.xml"
    scan(
        data,
        tmp_path / "o",
        "--max-noise-rate",
        "0.01",
        "--min-credibility",
        "0.5",
        "--junit",
        junit,
        "--format",
        "quiet",
        expect_exit=1,
    )
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    assert suite.name == "credaudit" and suite.tests == 8 and suite.failures == 1 and suite.skipped == 5
    cases = {case.name: case for case in suite}
    failure = cases["max_noise_rate"].result[0]
    assert isinstance(failure, Failure)
    assert "95% interval" in failure.text and "fail threshold: 0.01" in failure.text and "value:" in failure.text
    assert cases["min_credibility"].is_passed
    assert isinstance(cases["max_flagged"].result[0], Skipped)


def test_github_summary_and_annotations(tmp_path):
    data = noisy_file(tmp_path)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = scan(
        data,
        tmp_path / "o",
        "--max-noise-rate",
        "0.01",
        "--warn-min-credibility",
        "0.99",
        "--format",
        "quiet",
        expect_exit=1,
        env=env,
    )
    lines = result.stdout.splitlines()
    assert any(line.startswith("::error title=credaudit max_noise_rate::noise rate") for line in lines)
    assert any(line.startswith("::warning title=credaudit min_credibility::") for line in lines)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "# credaudit: ❌ FAIL" in text
    # JSON mode keeps stdout pure JSON: the annotations go to stderr.
    json_run = scan(data, tmp_path / "o", "--max-noise-rate", "0.01", "--format", "json", "--github", expect_exit=1)
    json.loads(json_run.stdout)
    assert "::error title=credaudit max_noise_rate::" in json_run.stderr


class _GateReport:
    """A report with one inconclusive check and one warning finding."""

    checks = [
        {
            "id": "max_noise_rate",
            "status": "inconclusive",
            "message": "estimate untrustworthy",
            "metric": "noise_rate",
            "bound": "estimate",
            "value": 0.1,
            "threshold": 0.05,
        }
    ]
    findings = [{"kind": "weak_features", "severity": "warning", "message": "features near chance"}]
    run = {"input": {"path": "x.csv", "sha256": "0"}, "stage_seconds": {"total": 1.0}}
    verdict = "inconclusive"
    noise = {"noise_rate": {"estimate": 0.1}, "credibility": {"estimate": 0.9}}
    created_at = "2026-11-29T00:00:00Z"


def test_junit_and_annotations_agree_with_the_exit_code(tmp_path):
    from junitparser import Failure, JUnitXml, Skipped

    from credaudit.report.junit import render_junit

    def suite_of(**kwargs):
        path = tmp_path / "j.xml"
        path.write_text(render_junit(_GateReport(), **kwargs))
        suite = next(iter(JUnitXml.fromfile(str(path))))
        return suite, {case.name: case for case in suite}

    suite, cases = suite_of()
    assert suite.failures == 1 and isinstance(cases["max_noise_rate"].result[0], Failure)
    assert cases["findings"].is_passed, "warnings alone do not fail without --strict"
    suite, cases = suite_of(allow_inconclusive=True)
    assert suite.failures == 0 and isinstance(cases["max_noise_rate"].result[0], Skipped)
    suite, cases = suite_of(allow_inconclusive=True, strict=True)
    assert suite.failures == 1 and "features near chance" in cases["findings"].result[0].text

    assert annotations(_GateReport())[0].startswith("::error title=credaudit max_noise_rate")
    allowed = annotations(_GateReport(), allow_inconclusive=True)
    assert allowed[0].startswith("::warning title=credaudit max_noise_rate")
    assert allowed[1].startswith("::warning title=credaudit weak_features")
    assert annotations(_GateReport(), strict=True, allow_inconclusive=True)[1].startswith("::error")


def test_annotation_escaping():
    class Report:
        checks = [{"id": "max_noise_rate", "status": "fail", "message": "50% of labels\nwrong: a, b"}]
        findings = []

    assert annotations(Report()) == ["::error title=credaudit max_noise_rate::50%25 of labels%0Awrong: a, b"]


def test_baseline_comparison_and_regression_gate(tmp_path):
    clean = noisy_file(tmp_path, "clean.parquet", rate=0.03)
    scan(clean, tmp_path / "before", "--format", "quiet")
    noisy = noisy_file(tmp_path, "noisy.parquet", rate=0.25)
    baseline = tmp_path / "before" / "report.json"
    report = json.loads(scan(noisy, tmp_path / "after", "--baseline", baseline, "--format", "json").stdout)
    rate = report["baseline"]["noise_rate"]
    assert rate["delta"] > 0.1 and rate["intervals_overlap"] is False
    assert {c["label"] for c in report["baseline"]["per_class"]} == {"alpha", "beta", "gamma"}
    assert "## Compared with the baseline" in (tmp_path / "after" / "report.md").read_text()
    # the gate: a rise of more than 5 points with separated intervals fails
    scan(
        noisy,
        tmp_path / "after",
        "--baseline",
        baseline,
        "--max-regression",
        "0.05",
        "--format",
        "quiet",
        expect_exit=1,
    )
    scan(noisy, tmp_path / "after", "--baseline", baseline, "--max-regression", "0.5", "--format", "quiet")
    # the same data against itself: no regression, whatever the threshold
    scan(clean, tmp_path / "again", "--baseline", baseline, "--max-regression", "0.0", "--format", "quiet")


def test_diff_command(tmp_path):
    scan(noisy_file(tmp_path, "a.parquet", rate=0.25), tmp_path / "a", "--format", "quiet")
    scan(noisy_file(tmp_path, "b.parquet", rate=0.03), tmp_path / "b", "--format", "quiet")
    a, b = tmp_path / "a" / "report.json", tmp_path / "b" / "report.json"
    improved = invoke(["diff", a, b])
    assert "noise rate" in improved.stdout and "changed" in improved.stdout
    worse = invoke(["diff", b, a, "--format", "json"], expect_exit=1)
    payload = json.loads(worse.stdout)
    assert payload["verdict"] == "fail" and payload["comparison"]["noise_rate"]["delta"] > 0
    assert invoke(["diff", b, a, "--max-regression", "0.9", "--format", "markdown"]).stdout.startswith(
        "## Compared with the baseline"
    )
    invoke(["diff", a, b, "--format", "yaml"], expect_exit=2)


def test_diff_of_unrelated_datasets_warns_and_does_not_gate(tmp_path):
    scan(noisy_file(tmp_path, "a.parquet", rate=0.03), tmp_path / "a", "--format", "quiet")
    other = json.loads((tmp_path / "a" / "report.json").read_text())
    # Another dataset: the same shape, no class in common, and much noisier.
    for section in (other["noise"]["per_class"], other["classes"]):
        for entry in section:
            entry["label"] = "other-" + str(entry["label"])
    other["noise"]["noise_rate"] = {"estimate": 0.6, "low": 0.55, "high": 0.65}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    result = invoke(["diff", tmp_path / "a" / "report.json", path, "--max-regression", "0.01", "--format", "json"])
    payload = json.loads(result.stdout)
    assert payload["comparison"]["comparable"] is False
    assert payload["checks"][0]["status"] == "warn" and "share no class" in payload["checks"][0]["message"]


def test_old_schema_is_read_and_newer_is_refused(tmp_path):
    scan(noisy_file(tmp_path), tmp_path / "o", "--format", "quiet")
    current = json.loads((tmp_path / "o" / "report.json").read_text())
    # A version-1 report: no baseline section, checks without warn fields.
    v1 = {k: v for k, v in current.items() if k != "baseline"}
    v1["schema_version"] = 1
    v1["checks"] = [
        {k: c[k] for k in ("id", "metric", "value", "bound", "threshold", "status", "interval")}
        for c in current["checks"]
        if c["id"] != "max_regression"
    ]
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(v1))
    assert compare_reports(load_report(old), current)["noise_rate"]["delta"] == pytest.approx(0.0)
    newer = tmp_path / "v9.json"
    newer.write_text(json.dumps({**current, "schema_version": 9}))
    with pytest.raises(UsageError, match="schema_version 9; this credaudit reads versions 1-4"):
        load_report(newer)
    invoke(["diff", newer, old], expect_exit=2)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataReadError, match="is not valid JSON"):
        load_report(bad)
    # Another command's report is named as such, not "not a report".
    for other, command in (({"kind": "fairness"}, "fairness"), ({"run": {"command": "select"}}, "select")):
        bad.write_text(json.dumps({"schema_version": 1, **other}))
        with pytest.raises(DataReadError, match=f"is a report of `credaudit {command}`; diff and --baseline"):
            load_report(bad)
    result = scan(noisy_file(tmp_path), tmp_path / "p", "--baseline", tmp_path / "missing.json", expect_exit=3)
    assert "--baseline" in result.stderr and "does not exist" in result.stderr


def test_html_is_self_contained_and_escaped(tmp_path):
    data = noisy_file(tmp_path)
    scan(data, tmp_path / "o", "--max-noise-rate", "0.5", "--format", "quiet")
    html = (tmp_path / "o" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no network resources"
    assert "<script src" not in html and "@import" not in html
    assert html.count("<svg") == 4, "heatmap, per-class error shares, priors, score distribution"
    assert 'id="heatmap"' in html and 'id="rows"' in html
    assert "<b>&amp;</b>" not in html and "&lt;b&gt;&amp;amp;&lt;/b&gt;" in html, "texts are escaped"
    assert ">PASS<" in html


def test_no_html_flag(tmp_path):
    scan(noisy_file(tmp_path), tmp_path / "o", "--no-html", "--format", "quiet")
    assert not (tmp_path / "o" / "report.html").exists()


def test_plain_progress_in_logs_is_periodic_lines_not_bars():
    import io

    from credaudit.console import PlainProgress

    now = [0.0]
    stream = io.StringIO()
    progress = PlainProgress(stream, interval=30.0, clock=lambda: now[0])
    progress.start("embedding", total=1000)
    for _ in range(10):
        now[0] += 10.0
        progress.advance(100)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "credaudit: embedding: started (1,000 steps)"
    assert lines[1] == "credaudit: embedding: 300/1,000 (30%), 10.0/s, about 1 min 10 s left"
    assert len(lines) == 2 + 3, "one line per 30 s of a 100 s stage, then the end"
    assert lines[-1] == "credaudit: embedding: done in 1 min 40 s"
    assert "\r" not in stream.getvalue()


def test_terminal_never_truncates_row_ids(tmp_path):
    data = noisy_file(tmp_path)
    frame = pl.read_parquet(data).with_columns(pl.format("banking77-train-{}", pl.int_range(pl.len())).alias("rid"))
    path = write_table(frame, tmp_path / "ids.parquet")
    report = json.loads(scan(path, tmp_path / "o", "--id-col", "rid", "--format", "json").stdout)
    fields = {k: report[k] for k in ("run", "classes", "noise", "detection", "findings", "checks", "verdict")}
    text = render_terminal(
        AuditReport(tool_version="x", created_at="now", baseline=None, **fields), color=False, width=60
    )
    for row in report["detection"]["top_flagged"]:
        assert row["row_id"] in text


def test_html_shows_the_confusions_not_the_diagonal(tmp_path):
    data = noisy_file(tmp_path, rate=0.25)
    scan(data, tmp_path / "o", "--format", "quiet")
    html = (tmp_path / "o" / "report.html").read_text()
    assert "diagonal masked" in html
    table = html.split('id="confusions"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") >= 2, "a ranked table of the most confused class pairs"


def test_conflicting_duplicates_group_identical_texts_with_several_labels():
    from credaudit.findings import find_conflicting_duplicates

    texts = pl.Series(["a", "b", "a", " ", " ", "c", "a", "b", "c", "b"])
    labels = np.array([0, 1, 1, 0, 1, 2, 0, 1, 2, 0])
    finding = find_conflicting_duplicates(texts, labels, [f"r{i}" for i in range(10)], ["x", "y", "z"])
    # "a" (rows 0, 2, 6) and "b" (1, 7, 9) carry two labels; blank texts and "c" (one label) do not count.
    assert finding.details["groups"] == 2 and finding.details["rows"] == 6
    first, second = finding.details["examples"]
    assert first == {"text": "a", "labels": {"x": 2, "y": 1}, "row_ids": ["r0", "r2", "r6"]}
    assert second == {"text": "b", "labels": {"y": 2, "x": 1}, "row_ids": ["r1", "r7", "r9"]}
    assert find_conflicting_duplicates(texts, np.zeros(10, dtype=np.int64), list(range(10)), ["x"]) is None


def test_labels_json_has_no_type_for_are_written_as_text(tmp_path, small_frame):
    # A decimal or date label column: report.json writes the values as the column spells them
    # ("1.50", "2024-01-31") instead of failing with an internal error.
    import datetime
    from decimal import Decimal

    decimals = [Decimal(["1.50", "2.25", "3.00"][i % 3]) for i in range(small_frame.height)]
    frame = small_frame.with_columns(pl.Series("label", decimals, dtype=pl.Decimal(10, 2)))
    out = tmp_path / "o"
    invoke(["scan", write_table(frame, tmp_path / "d.parquet"), "--embedding-col", "emb", "--out", out])
    report = json.loads((out / "report.json").read_text())
    assert sorted(c["label"] for c in report["classes"]) == ["1.50", "2.25", "3.00"]
    dates = [datetime.date(2024, 1, 1 + i % 3) for i in range(small_frame.height)]
    frame = small_frame.with_columns(pl.Series("label", dates))
    invoke(["scan", write_table(frame, tmp_path / "t.parquet"), "--embedding-col", "emb", "--out", tmp_path / "t"])
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert sorted(c["label"] for c in report["classes"]) == ["2024-01-01", "2024-01-02", "2024-01-03"]
