"""A local Ray that listens on loopback only.

`ray.init()` on Linux advertises the machine's external address as the node IP (it even
turns an explicit `_node_ip_address="127.0.0.1"` into it), so GCS, raylet, the workers,
the dashboard agent and its metrics endpoint listen on every interface, unauthenticated.
Ray binds to loopback when its node IP is loopback, which it picks only while its
"cluster mode" is off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the macOS / Windows default).
`init_local` switches that off while it starts the local Ray (the processes it starts
inherit the setting) and puts the dashboard on 127.0.0.1; connecting to a cluster
(`RAY_ADDRESS`) is untouched. `tests/test_exposure.py` lists the listening sockets of the
whole process tree.
"""

from __future__ import annotations

import os
from typing import Any

LOOPBACK = "127.0.0.1"
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_local(**kwargs: Any) -> None:
    """`ray.init(**kwargs)` for a new local Ray bound to 127.0.0.1 (dashboard included)."""
    import ray
    from ray._private import ray_constants

    kwargs.setdefault("dashboard_host", LOOPBACK)
    saved_env, saved_flag = os.environ.get(CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_ENV] = "0"  # for the processes Ray starts (raylet, agents, workers)
    # Ray read the variable when it was imported: its node-IP choice looks at this flag.
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(CLUSTER_ENV, None)
        else:
            os.environ[CLUSTER_ENV] = saved_env
