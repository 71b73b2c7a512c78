"""Cluster actions (`cluster join|ls|leave`): hosts sharing overlay networks through etcd."""
from __future__ import annotations


def join(store: str | None, advertise: str | None, name: str | None) -> dict:
    from ..clusterhost import membership
    from . import require_root

    require_root("join a cluster")
    return membership.join(store, advertise, name)


def members() -> list[dict]:
    from ..clusterhost import membership

    return membership.members()


def leave(force: bool = False) -> None:
    from ..clusterhost import membership
    from . import require_root

    require_root("leave a cluster")
    membership.leave(force)
