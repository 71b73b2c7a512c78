"""How `watch` shows what it sees: one JSON object per line (`--json`: events, flows, drops,
diagnoses, the end; netdiag/schemas/watch.schema.json), plain lines when stdout is no terminal,
and a live table on a terminal (flows by impact, with cause, hop and fix)."""
from __future__ import annotations

import json
import sys
import time

from .flows import KINDS, Flow


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def diagnosis_text(d: dict) -> str:
    if not d.get("cause"):
        return f"{d['verdict']}: {d['summary']}"
    hop = d.get("hop")
    where = f" at hop {hop['n']} ({hop['label']} {hop['interface']})" if hop else ""
    fix = f"; fix: {d['fix_command'] or d['fix']}" if (d.get("fix_command") or d.get("fix")) else ""
    checked = {True: " (checked ✓)", False: " (checked ✗: still blocked)"}.get(d.get("fix_checked"), "")
    return f"{d['cause']}{where}: {d['summary']}{fix}{checked}"


def drop_place(d: dict) -> str:
    """Where a drops line says the packets died: "in cli (eth0)", "in host (veth1a2b, cli's)"."""
    if not d.get("endpoint"):
        return "(host-wide)"
    device = d.get("device") or ""
    if device and d.get("device_of"):
        device += f", {d['device_of']}'s"
    return f"in {d['endpoint']}" + (f" ({device})" if device else "")


class JsonView:
    def __init__(self, out=None):
        self.out = out or sys.stdout

    def emit(self, obj: dict) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def started(self, info: dict) -> None:
        self.emit({"type": "start", **info})

    event = drops = diagnosis = end = emit

    def scope(self, s: dict) -> None:  # through self.emit: a view that collects instead of printing gets it too
        self.emit(s)

    def flow(self, flow: Flow, final: bool = False) -> None:
        self.emit(flow.to_json(final))

    def tick(self, flows) -> None:
        pass

    def close(self) -> None:
        pass


class LineView(JsonView):
    """Plain lines, one per thing seen: for a pipe, a file or a log."""

    def emit(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def started(self, info: dict) -> None:
        what = ", ".join(info["watching"]) if info["watching"] else "every namespace"
        self.emit(f"watching {what}" + (f" for {info['for']:g}s" if info.get("for") else "") + " (Ctrl-C stops)")
        for note in info.get("notes") or []:
            self.emit(f"note: {note}")

    def event(self, ev: dict) -> None:
        self.emit(f"{_clock(ev['time'])} {ev['kind']:<10} {ev['src']['label']}:{ev['src']['port']} -> "
                  f"{ev['dst']['label']} ({ev['dst']['ip']}) {ev['proto']}/{ev['dst']['port']}" + (f" x{ev['count']}" if ev["count"] > 1 else ""))

    def scope(self, s: dict) -> None:
        self.emit(f"{_clock(s['time'])} started since: {', '.join(s['added'])}: watched too")

    def flow(self, flow: Flow, final: bool = False) -> None:
        if final:
            d = flow.diagnosis
            self.emit(f"#{flow.id} {flow.kind} {flow.text()} x{flow.count} {_clock(flow.first)}-{_clock(flow.last)}"
                      + (f" recovered {_clock(flow.recovered)}" if flow.recovered else "") + (f"  {diagnosis_text(d)}" if d else ""))
        elif flow.recovered:
            self.emit(f"{_clock(flow.recovered)} flow #{flow.id} recovered: " + ("a connect completed" if flow.proto == "tcp" else "a reply came")
                      + f": {flow.text()}")
        else:
            self.emit(f"{_clock(flow.first)} new flow #{flow.id}: {KINDS[flow.kind]}: {flow.text()}")

    def drops(self, d: dict) -> None:
        self.emit(f"{_clock(d['time'])} dropped  {d['count']} x {d['reason']} at {d['location']} {drop_place(d)}")

    def diagnosis(self, d: dict) -> None:
        self.emit(f"  #{d['flow']} {diagnosis_text(d)}")

    def end(self, summary: dict) -> None:
        drops = ", ".join(f"{r} {n}" for r, n in sorted(summary["drops"].items(), key=lambda x: -x[1])) or "none"
        self.emit(f"{summary['flows']} failing flow(s), {summary['events']} event(s) in {summary['seconds']:g}s; "
                  f"drops by reason: {drops}")


class TableView(LineView):
    """A live table on a terminal: the failing flows by impact, refreshed as events and diagnoses come."""

    def __init__(self, out=None):
        super().__init__(out)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.out)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.drop_totals: dict[str, int] = {}
        self.started_at = time.time()

    def started(self, info: dict) -> None:
        super().started(info)
        self.live.start()

    def emit(self, text: str) -> None:  # lines go above the table
        self.console.print(text, markup=False, highlight=False)

    def event(self, ev: dict) -> None:
        pass  # the table counts them

    def flow(self, flow: Flow, final: bool = False) -> None:
        pass

    def diagnosis(self, d: dict) -> None:
        pass

    def drops(self, d: dict) -> None:
        key = f"{d['reason']} {drop_place(d)}"
        self.drop_totals[key] = self.drop_totals.get(key, 0) + d["count"]

    def tick(self, flows) -> None:
        self.live.update(self._table(flows))

    def _table(self, flows):
        from rich.table import Table

        now = time.time()
        t = Table("#", "kind", "flow", "count", "last", "cause", "hop", "fix", header_style="bold", expand=True,
                  title=f"netdiag watch · {int(now - self.started_at)}s · failing flows by impact")
        for f in flows.by_impact()[:40]:
            d = f.diagnosis
            hop = d["hop"] if d else None
            cause = (d["cause"] or d["verdict"]) if d else ("diagnosing…" if f.diagnosing else "")
            cause += " (recovered)" if f.recovered else ""
            t.add_row(str(f.id), f.kind, f.text(), str(f.count), f"{int(now - f.last)}s ago", cause,
                      f"{hop['n']} {hop['label']} {hop['interface']}" if hop else "",
                      (d.get("fix_command") or d.get("fix") or "") if d else "", style="red" if d and d.get("cause") and not f.recovered else None)
        if self.drop_totals:
            top = sorted(self.drop_totals.items(), key=lambda x: -x[1])[:6]
            t.caption = "drops: " + ", ".join(f"{r} {n}" for r, n in top)
        return t

    def close(self) -> None:
        self.live.stop()


def for_output(json_out: bool):
    if json_out:
        return JsonView()
    return TableView() if sys.stdout.isatty() else LineView()
