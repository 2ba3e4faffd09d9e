"""Services that refuse to run as root (Elasticsearch, PostgreSQL) run as a system user of their
own when devservices is started by root; these helpers create that user and hand it its files."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from devservices.errors import DevServicesError
from devservices.process import RunAs
from devservices.report import log


def ensure_system_user(user: str, service: str) -> RunAs | None:
    """None unless root; else the ids of `user`, created (no home, no shell) if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise DevServicesError(
                f"running as root but `useradd` is missing, so the {user} user that "
                f"{service} must run as cannot be created; create it yourself or run as a "
                "normal user."
            ) from None
        log.info("creating system user %s to run %s (it refuses root)", user, service)
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise DevServicesError(
                f"`useradd {user}` failed: {proc.stderr.strip()}; create the user yourself."
            ) from None
        entry = pwd.getpwnam(user)
    return RunAs(entry.pw_uid, entry.pw_gid)


def chown_tree(path: Path, run_as: RunAs) -> None:
    st = path.stat()
    if (st.st_uid, st.st_gid) == (run_as.uid, run_as.gid):
        return  # already done on an earlier `up`
    os.chown(path, run_as.uid, run_as.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), run_as.uid, run_as.gid)


def check_reachable(path: Path, run_as: RunAs, user: str, service: str, env_vars: str) -> None:
    """Every ancestor must be searchable by the service's user, or it fails obscurely."""
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == run_as.uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == run_as.gid and st.st_mode & stat.S_IXGRP:
            continue
        raise DevServicesError(
            f"{service} runs as {user}, which cannot enter {parent} "
            f"(mode {stat.filemode(st.st_mode)}); `chmod o+x {parent}` or point "
            f"{env_vars} somewhere it can reach."
        )
