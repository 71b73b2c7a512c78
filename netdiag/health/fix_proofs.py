"""Proofs of a health check's fix before it is run: PACKET_LOSS's rule deleted on a copy of the
model and traced again, and a DNS fix checked against the names the network's embedded DNS would
answer for. (Running a fix is netdiag.fix_runner.)"""
from __future__ import annotations


def loss_check(model, rule_ns: str, rule: dict, retrace) -> dict:
    """PACKET_LOSS's fix (the loss rule deleted) on a copy of the model and traced again: the static
    path, which calls a path with a rule that drops at random `unknown (PACKET_LOSS)`, must then
    deliver, request and reply (another loss rule on the way keeps it unknown)."""
    from ..reason import fixes

    return fixes.check(model, fixes.Fix(apply=fixes.remove_rule(rule_ns, rule["family"], rule["table"], rule["chain"],
                                                                 rule["handle"])), retrace)


def dns_names(model, network: str, joining: list[dict] = ()) -> set[str]:
    """The names a network's embedded DNS answers for: its containers' names and aliases there
    (`joining`: containers the fix connects to it, by name)."""
    out = {c["name"].lower() for c in joining}
    for c in model.containers():
        n = (c.get("networks") or {}).get(network)
        if n is not None:
            out |= {c["name"].lower(), *(a.lower() for a in n.get("aliases") or [])}
    return out


def dns_check(model, src_name: str, network: str, name: str, joining: list[dict] = ()) -> dict:
    """A DNS fix that puts the source on `network` (connected, or recreated there): on the model,
    does that network's embedded DNS answer for `name`? (Whether packets then flow is not modelled:
    joining a network adds an interface, which a model copy cannot add.)"""
    key = name.rstrip(".").lower()
    known = dns_names(model, network, joining)
    if key in known:
        return {"checked": True, "delivers": True, "detail": f"on the model: with {src_name} on network {network}, its "
                f"embedded DNS answers for {name} (a container of that network: {', '.join(sorted(known))})"}
    return {"checked": True, "delivers": False, "detail": f"on the model: network {network}'s embedded DNS knows "
            f"{', '.join(sorted(known)) or 'no name'}, not {name}"}
