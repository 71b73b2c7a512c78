"""Pure: what a failed check means. From the check's own measurements (the stage it died in, the
error, the status, the times) and the trace pipeline's diagnosis of the same path, the cause, the
hop, the evidence and the fix; and the same verdict in the words people already read: HAProxy's
check status, the AWS target health reason, the Kubernetes probe message.

Who decides what:
- a name that does not resolve from the source: DNS_FAILURE (the resolver asked, its answer; a
  resolver that does not answer: the trace of the query's own path names why, with its fix);
- a handshake that fails (timeout, refused, unreachable): the trace pipeline, which follows the
  SYN, watches it with the kernel's own trace and names the rule, the route, the socket;
  a loss rule, or a path that works now, is PACKET_LOSS when a share of handshakes fails;
- after the handshake: an HTTP status outside --expect or a non-HTTP answer is APP_ERROR; an
  answer that does not arrive in time is MTU_BLACKHOLE when full-size packets from the server die
  on the way back (the trace from the server with that size), else SLOW_RESPONSE with the time
  the answer took (or how long it was waited for).
"""
from __future__ import annotations

from ..reason.result import Diagnosis
from .spec import Spec, expect_text

HAPROXY = {"L4OK": "Layer4 check passed", "L7OK": "Layer7 check passed", "L4TOUT": "Layer4 timeout",
           "L4CON": "Layer4 connection problem", "L7TOUT": "Layer7 timeout", "L7RSP": "Layer7 invalid response",
           "L7STS": "Layer7 wrong status", "SOCKERR": "Socket error",
           "MAINT(resolution)": "the server's name does not resolve: HAProxy keeps it in maintenance (resolution)"}
AWS = {"Target.Timeout": "Request timed out", "Target.FailedHealthChecks": "Health checks failed",
       "Target.ResponseCodeMismatch": "Health checks failed with these codes: [{status}]"}
_SYSCALL = {"refused": "connection refused", "unreachable": "no route to host", "netunreach": "network is unreachable",
            "denied": "permission denied", "reset": "connection reset by peer", "error": "socket error"}


def verdicts(spec: Spec, check: dict, dns_answer: str = "", dns_server: str = "") -> dict:
    """The check's outcome as HAProxy, an AWS target group and a Kubernetes probe would report it."""
    stage, err, status = check.get("stage"), check.get("error"), check.get("status")
    addr = f"{check.get('address') or spec.host}:{spec.port}"
    url = spec.show() if spec.mode == "http" else ""
    get = f'Get "{url}": '
    k8s_head = "Readiness probe failed: "
    if check.get("ok"):
        hap = "L7OK" if spec.mode == "http" else "L4OK"
        return {"haproxy": {"status": hap, "text": HAPROXY[hap]}, "aws": {"state": "healthy", "reason": None, "description": None},
                "kubernetes": "probe succeeded" + (f" (HTTP {status})" if status else "")}
    if stage == "resolve":
        hap, aws = "MAINT(resolution)", "Target.FailedHealthChecks"
        server = f" on {dns_server}:53" if dns_server else ""
        why = "no such host" if "NXDOMAIN" in dns_answer else "i/o timeout" if "did not answer" in dns_answer or not dns_answer \
            else "server misbehaving"
        k8s = f"dial tcp: lookup {spec.host}{server}: {why}"
        k8s = (get + k8s) if spec.mode == "http" else k8s
    elif stage == "connect":
        if err == "timeout":
            hap, aws = "L4TOUT", "Target.Timeout"
            k8s = (get + "context deadline exceeded (Client.Timeout exceeded while awaiting headers)") if spec.mode == "http" \
                else f"dial tcp {addr}: i/o timeout"
        else:
            hap, aws = ("L4CON", "Target.FailedHealthChecks") if err != "denied" else ("SOCKERR", "Target.FailedHealthChecks")
            dial = f"dial tcp {addr}: connect: {_SYSCALL.get(err, err or 'error')}"
            k8s = (get + dial) if spec.mode == "http" else dial
    elif err == "timeout":
        hap, aws = "L7TOUT", "Target.Timeout"
        k8s = get + ("context deadline exceeded (Client.Timeout or context cancellation while reading body)"
                     if status is not None else "context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    elif err == "status":
        hap, aws = "L7STS", "Target.ResponseCodeMismatch"
        k8s = f"HTTP probe failed with statuscode: {status}"
    elif err == "malformed":
        hap, aws = "L7RSP", "Target.FailedHealthChecks"
        k8s = get + "net/http: HTTP/1.x transport connection broken: malformed HTTP response"
    else:  # closed, reset, other socket errors after the handshake
        hap, aws = "L7RSP", "Target.FailedHealthChecks"
        k8s = get + ("EOF" if err == "closed" else f"read tcp: {_SYSCALL.get(err, err or 'error')}")
    return {"haproxy": {"status": hap, "text": HAPROXY[hap]},
            "aws": {"state": "unhealthy", "reason": aws, "description": AWS[aws].format(status=status)},
            "kubernetes": k8s_head + k8s}


def _hop(diag: Diagnosis | None) -> dict | None:
    hop = diag.blocked_hop if diag else None
    return hop.brief() if hop else None


def _from_diagnosis(out: dict, diag: Diagnosis, cause: str | None = None, summary: str | None = None) -> dict:
    out.update(cause=cause or diag.cause, summary=summary or diag.summary, hop=_hop(diag),
               fix=diag.fix.text or "", fix_command=diag.fix.command, fix_check=diag.fix.check)
    # host-wide drop counts stay in the diagnosis; a retransmitted SYN traced twice is said once
    seen = {(e.get("kind"), e.get("detail")) for e in out["evidence"]}
    for e in diag.evidence:
        if e.kind != "kernel_drop" and (e.kind, e.detail) not in seen:
            seen.add((e.kind, e.detail))
            out["evidence"].append(e.to_json())
    return out


def _probabilistic(diag: Diagnosis | None) -> dict | None:
    """The loss rule the static path could not decide (numgen random), if it changes the outcome."""
    for r in diag.unevaluated_rules if diag else []:
        if r.get("changes_outcome") and "probabilistic" in (r.get("reason") or ""):
            return r
    return None


def classify(spec: Spec, check: dict, *, src: str, resolution: dict | None = None, diagnosis: Diagnosis | None = None,
             loss: dict | None = None, late: dict | None = None, mtu: dict | None = None, series: dict | None = None) -> dict:
    """The health verdict: {"healthy", "cause", "summary", "hop", "evidence", "fix", "fix_command",
    "fix_check", "verdicts"}. `resolution` is resolve.resolve()'s result; `diagnosis` the trace of
    the SYN's path (connect failures); `loss` a burst's or the series' share of handshakes that got
    through, with the loss rule's fix; `late` the answer that came after the deadline; `mtu` the
    trace from the server back to the source with a full-size packet; `series` the --count stats."""
    target = spec.show()
    out = {"healthy": bool(check.get("ok")), "cause": None, "summary": "", "hop": None, "evidence": [], "fix": "",
           "fix_command": None, "fix_check": None,
           "verdicts": verdicts(spec, check, (resolution or {}).get("answer", ""), (resolution or {}).get("server") or "")}
    t = check.get("timings") or {}
    if resolution and resolution.get("source"):
        out["evidence"].append({"kind": "resolved", "detail": f"{resolution['name']} -> {resolution['address']} "
                                f"({'hosts file' if resolution['source'] == 'hosts' else resolution['answer']})"})
    if check.get("ok") and not (series and series["ok"] < series["count"]):
        what = f"HTTP {check['status']}" if spec.mode == "http" else "TCP handshake"
        out["summary"] = f"{target} is healthy from {src}: {what} in {_secs(t.get('total'))}"
        if series and series["count"] > 1:
            out["summary"] += f"; {series['ok']}/{series['count']} checks passed, p50 {_secs(series['p50'])}, p95 {_secs(series['p95'])}"
        return out
    out["healthy"] = False
    stage, err = check.get("stage"), check.get("error")

    if stage == "resolve":
        r = resolution or {}
        out["cause"] = "DNS_FAILURE"
        out["summary"] = f"{spec.host} does not resolve from {src}: {r.get('answer') or 'no answer'}"
        servers = ", ".join(r.get("nameservers") or []) or "none"
        out["evidence"].append({"kind": "resolver", "detail": f"{r.get('where', 'its resolv.conf')}: nameservers {servers}"
                                + (f", search {' '.join(r['search'])}" if r.get("search") else "")})
        out["evidence"] += [{"kind": "dns", "detail": a["answer"], "server": a["server"], "name": a["name"]} for a in r.get("attempts", [])]
        # the resolver cannot be reached: the query's path says why, unless netdiag knows a change of
        # networks that makes the name resolve (a reachable resolver would not know it either)
        if diagnosis and diagnosis.verdict == "blocked" and not (r.get("hint") or {}).get("fix_command"):
            server = diagnosis.dst_ip or r.get("server")
            return _from_diagnosis(out, diagnosis, "DNS_FAILURE",
                                   f"{spec.host} does not resolve from {src}: its nameserver {server} cannot be reached "
                                   f"({diagnosis.cause}): " + diagnosis.summary)
        hint = r.get("hint") or {}
        if hint.get("detail"):
            out["evidence"].append({"kind": "hint", "detail": hint["detail"]})
        out.update(fix=hint.get("fix", ""), fix_command=hint.get("fix_command"), fix_check=hint.get("fix_check"))
        return out

    if stage == "connect":
        rule = _probabilistic(diagnosis)
        lossy = loss is not None and 0 < loss["rate"] < 1
        blocked = diagnosis and diagnosis.verdict == "blocked"
        # a trace that names a loss rule caught one of the lost packets: the share lost is the answer
        if blocked and not (lossy and rule is not None and _names_rule(diagnosis, rule)):
            return _from_diagnosis(out, diagnosis)
        if lossy:
            return _packet_loss(out, spec, src, loss, rule, diagnosis)
        diag_word = (f"the trace says {diagnosis.verdict}" + (f" ({diagnosis.cause})" if diagnosis.cause else "")
                     if diagnosis else "no trace could be run")
        if loss is not None and loss["rate"] == 1:
            out["summary"] = (f"The check's TCP handshake failed ({err}), but the path delivers now ({diag_word}) and "
                              f"{loss['ok']}/{loss['attempts']} handshakes got through: an intermittent failure; "
                              f"repeat the check with --count to measure it")
        else:
            out["summary"] = f"The check's TCP handshake failed ({err}: {check.get('detail')}) and {diag_word}"
        if diagnosis:
            out["evidence"] += [e.to_json() for e in diagnosis.evidence]
        return out

    if err in ("status", "malformed", "closed", "reset"):
        out["cause"] = "APP_ERROR"
        if err == "status":
            out["summary"] = (f"{target} answered HTTP {check['status']} from {src}; the check expects "
                              f"{expect_text(spec.expect)}")
        elif err == "malformed":
            out["summary"] = f"{target} does not answer HTTP: {check.get('detail')}"
        else:
            out["summary"] = f"{target} accepted the connection but {check.get('detail')}"
        if check.get("body"):
            out["evidence"].append({"kind": "body", "detail": "first bytes of the body: " + repr(check["body"][:200])})
        out["evidence"].append({"kind": "timing", "detail": f"connected in {_secs(t.get('connect'))}, answered in {_secs(t.get('total'))}"})
        out["fix"] = "the network delivers; the application answers with an error: read its log (netdiag logs / docker logs)"
        if series and series["count"] > 1:
            out["summary"] += f" ({series['count'] - series['ok']}/{series['count']} checks failed)"
        return out

    # the handshake worked, the request went out, the answer did not complete in time
    step = _mtu_step(mtu) if late is None else None  # an answer that came late did get through
    if step is not None:
        hop = _hop(step)
        where = f" at {hop['label']} {hop['interface']}" if hop else ""
        got = check.get("received") or 0
        _from_diagnosis(out, step, "MTU_BLACKHOLE",
                        f"The handshake and the request get through but the answer does not: {got} bytes arrived in "
                        f"{_secs(spec.timeout)}, and full-size packets from the server die on the way back{where}. "
                        + step.summary)
        out["evidence"].insert(0, {"kind": "check", "detail": check.get("detail", "")})
        live = (mtu or {}).get("live")
        if live is not None and live is not step and live.cause == "FIREWALL_DROP":
            rule = next((e for e in live.evidence if e.kind == "nft_rule"), None)
            if rule:  # the rule that keeps the server from learning the path MTU
                out["evidence"].append({**rule.to_json(), "detail": "the ICMP 'fragmentation needed' that would make the server "
                                        f"send smaller packets is dropped: {rule.detail}"})
                out["evidence"] += [e.to_json() for e in live.evidence if e.kind == "nft_trace"]
                if live.fix.command:
                    out["fix"] += f"; or: {live.fix.command} (lets path MTU discovery work)"
        return out
    out["cause"] = "SLOW_RESPONSE"
    if late is not None:
        answer = f"HTTP {late['status']}" if late.get("status") else "its answer"
        took = (late.get("timings") or {}).get("total")
        out["summary"] = (f"{target} answers, but too slowly: {answer} came after {_secs(took)}, "
                          f"the check gives up after {_secs(spec.timeout)}")
        out["measured"] = took
    else:
        waited = (check.get("waited") or spec.timeout)
        out["summary"] = (f"{target} accepted the connection and the request but sent "
                          + ("nothing" if not check.get("received") else f"only {check['received']} bytes")
                          + f" within {_secs(waited)} (the check allows {_secs(spec.timeout)})")
        out["measured"] = None
    back = (mtu or {}).get("static")
    if back and back.verdict == "delivered":
        out["evidence"].append({"kind": "path_back", "detail": f"a {back.size + 28}-byte packet from the server back to "
                                f"{back.dst} fits every link on the way (no MTU step): the network is not what holds the answer"})
    out["evidence"].append({"kind": "timing", "detail": f"connect {_secs(t.get('connect'))}, first byte "
                            f"{_secs(t.get('first_byte')) if t.get('first_byte') else 'none'}, timeout {_secs(spec.timeout)}"})
    if series and series["count"] > 1:
        out["summary"] += f" ({series['count'] - series['ok']}/{series['count']} checks timed out)"
    out["fix"] = (f"raise the check's timeout above {_secs(out['measured'])}, or make the application answer faster"
                  if out["measured"] else "make the application answer (a hung worker, a lock, a slow upstream), then re-check")
    return out


def _mtu_step(mtu: dict | None) -> Diagnosis | None:
    """The reverse trace that finds a full-size packet too big for a link on the way back."""
    for d in ((mtu or {}).get("live"), (mtu or {}).get("static")):
        if d and d.cause == "MTU_BLACKHOLE":
            return d
    return None


def _names_rule(diag: Diagnosis, rule: dict) -> bool:
    return any(e.kind == "nft_rule" and e.extra.get("handle") == rule.get("handle") and
               e.extra.get("table") == f"{rule.get('family')} {rule.get('table')}" for e in diag.evidence)


def _packet_loss(out: dict, spec: Spec, src: str, loss: dict, rule: dict | None, diag: Diagnosis | None) -> dict:
    out["cause"] = "PACKET_LOSS"
    pct = f"{loss['rate']:.0%}"
    how = "of the checks" if loss.get("source") == "series" else "of TCP handshakes"
    out["summary"] = (f"Only {pct} {how} from {src} to {spec.host}:{spec.port} get through "
                      f"({loss['ok']}/{loss['attempts']}): packets are lost on the way, so the check flaps")
    out["success_rate"] = loss["rate"]
    out["evidence"].append({"kind": "loss", "detail": f"{loss['ok']}/{loss['attempts']} succeeded"
                            + (f", failures: {loss['errors']}" if loss.get("errors") else ""), "rate": loss["rate"]})
    if rule:
        out["summary"] += f": rule '{rule['text']}' in {rule['family']} {rule['table']} {rule['chain']} ({rule['namespace']}) drops a share"
        out["evidence"].append({"kind": "nft_rule", "detail": f"{rule['namespace']}: {rule['family']} {rule['table']} {rule['chain']} "
                                f"(handle {rule['handle']}): {rule['text']} ({rule['reason']})", "table": f"{rule['family']} {rule['table']}",
                                "chain": rule["chain"], "handle": rule["handle"], "rule": rule["text"]})
        out["hop"] = _hop(diag) if diag and diag.verdict == "blocked" else None
    if diag:
        out["evidence"] += [e.to_json() for e in diag.evidence if e.kind in ("nft_trace", "nft_counter")]
    if loss.get("fix_command"):
        out.update(fix=f"{loss['fix_command']}  # delete the rule that drops a share of the packets",
                   fix_command=loss["fix_command"], fix_check=loss.get("fix_check"))
    elif not rule:
        out["fix"] = ("no rule on the path drops packets at random: look for a flapping link, a full queue or conntrack "
                      "(conntrack -S) (manual: nothing in the model loses packets, so there is nothing a command could remove)")
    else:
        out["fix"] = (f"delete the rule '{rule['text']}' in {rule['family']} {rule['table']} {rule['chain']} ({rule['namespace']}) "
                      "(manual: the trace did not pass the namespace it is in, so no command that reaches it can be given)")
    return out


def _secs(t) -> str:
    if t is None:
        return "?"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"
