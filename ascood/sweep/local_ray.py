"""A local Ray closed to the network by design: every server on 127.0.0.1, token auth always on.

Ray 2.60 binds its servers (GCS, raylet, workers, agents, metrics exporters) to the node's address,
which for a local `ray.init()` is the machine's routable address unless Ray's "no cluster" mode
is on (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`): then the node is 127.0.0.1 and every server binds
loopback. Token auth is forced on with a token file of our own (mode 0600) whatever the user's
environment says (`RAY_AUTH_MODE=disabled` would otherwise let anyone who reaches a port run code).
After start-up the node address and auth mode are checked; a Ray that does not comply is refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from ascood.sweep.errors import SweepSetupError

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_FILE = "ray-auth-token"


def private_token(directory: Path) -> Path:
    """A token file only this user can read, made once (0600 in a 0700 directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    st = path.stat()
    if st.st_uid != os.getuid():
        raise SweepSetupError(f"{path}: the Ray token file belongs to another user; remove it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)
    return path


def start_local_ray(token_dir: Path, **init_kwargs) -> None:
    """`ray.init` for a sweep on this machine only; raises SweepSetupError if Ray stayed open."""
    import ray
    from ray._private import ray_constants
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, Config, get_authentication_mode

    os.environ[LOCAL_ONLY_ENV] = "0"  # the daemons and workers Ray starts read it at import
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process may have imported Ray already
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(private_token(token_dir))
    os.environ.pop("RAY_AUTH_TOKEN", None)  # a token in the environment would win over our file
    Config.initialize("")  # Ray caches the auth mode per process
    AuthenticationTokenLoader.instance().reset_cache()
    ray.init(**init_kwargs)
    node = ray.util.get_node_ip_address()
    if node not in ("127.0.0.1", "::1") or get_authentication_mode() != AuthenticationMode.TOKEN:
        ray.shutdown()
        raise SweepSetupError(f"Ray started on {node} (auth {get_authentication_mode()}), not on loopback with "
                              "token auth; refusing to run a sweep open to the network")
