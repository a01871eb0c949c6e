"""The plain-text report of ``bench.relay`` and the JSON dump.

Every figure is printed as app / baseline with their ratio: the baseline relay ran in the same
run on the same machine, and machines here vary several-fold from day to day, so the ratio is
the figure to compare across days. The summary marks the issue's targets PASS/FAIL.

This module assembles it (the header, each figure's section, the checks, the summary); the
figures' tables are in ``bench.report_latency``, ``bench.report_capacity``,
``bench.report_stuck`` and ``bench.report_profile``, the summary in ``bench.report_summary``,
the results and the JSON dump in ``bench.report_results``.
"""

from __future__ import annotations

from bench.report_capacity import bytes_section, memory_section, throughput_section
from bench.report_format import log_lines
from bench.report_latency import enter_section, first_token_section, latency_section
from bench.report_profile import profile_section
from bench.report_results import Results
from bench.report_stuck import stuck_section
from bench.report_summary import summary_section

FOREIGN_WARN = 0.15  # other processes' CPU share that makes a level's figures suspect


def render(results: Results) -> str:
    """The whole report: what ran where on which code, each figure, the checks, the summary."""
    c = results.config
    pin = results.pinning
    where = (
        f"servers on CPU {pin.app_cpus}; load on CPU {pin.load_cpus}" if pin.pinned else pin.note
    )
    header = [
        "Streamside relay benchmark: one Daphne worker (DEBUG off), in-process channel layer,"
        " SQLite, against the baseline relay in the same run",
        "  baseline: bench.baseline (same Daphne, one process; one shared aiohttp session, one"
        ' {"d": delta} frame per delta; no DB, no channel layer, no HTML)',
        "  every figure: app, baseline and app/baseline (×1.00 = as cheap as the bare relay)",
        f"  {where}",
        f"  app code: {results.revision}",
        f"  streams: {c['tps']:g} tok/s x {c['tokens']} tokens, ttft {c['ttft']:g} s, one token "
        f"per SSE chunk, send-stamped; starts staggered over {c['stagger_s']:g} s",
    ]
    sections = ["\n".join(header), latency_section(results), first_token_section(results)]
    if results.enter:
        sections.append(enter_section(results.enter, "SQLite"))
    if results.throughput:
        sections.append(throughput_section(results))
    if results.bytes:
        sections.append(bytes_section(results))
    sections.append(memory_section(results))
    if results.stuck:
        sections.append(stuck_section(results))
    sections.append(profile_section(results.profile))
    sections.append(problems_section(results))
    sections.append(summary_section(results))
    return "\n\n".join(sections)


def problems_section(results: Results) -> str:
    """What went wrong: bad answers, levels skewed by other processes, log lines, notes."""
    lines = ["Checks"]
    everything = (
        results.levels
        + results.base_levels
        + results.throughput
        + results.base_throughput
        + [lv for r in results.stuck for lv in (r.clean, r.stuck)]
    )
    for lv in everything:
        for f in lv.facts:
            if not f.ok:
                lines.append(f"  {lv.who} {lv.name}: {f.marker}: {f.verdict}")
    if len(lines) == 1:
        lines.append("  every answer: final frame 'complete', deltas == upstream text, seq rising")
    lines = lines[:40]
    for lv in everything:
        share = lv.cpu.get("foreign_cpu_s", 0.0) / max(lv.cpu.get("wall_s", 1.0), 1e-9)
        if share > FOREIGN_WARN:
            lines.append(
                f"  WARNING {lv.who} {lv.name}: other processes used {share * 100:.0f}% of a "
                "core meanwhile; its figures are skewed, run again on a quiet machine"
            )
    lines += log_lines("app worker", results.app_log_problems)
    lines += log_lines("baseline", results.baseline_log_problems)
    lines += [f"  note: {note}" for note in results.notes]
    return "\n".join(lines)
