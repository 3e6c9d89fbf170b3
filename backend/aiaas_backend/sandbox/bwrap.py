"""The bubblewrap sandbox: a mount namespace that shows the Python environment read-only,
the run's folder (read-write for a worker, read-only for a replica), a private ``/tmp`` and
nothing else of the host; no network (the API server is reached through its Unix socket,
bound in); its own process tree; kernel limits on processes, memory and file size.

Two ways in, chosen by who runs the server:

* **as a normal user** bubblewrap makes an unprivileged user namespace; the limits are set
  inside it, so the process limit counts only the sandbox's own processes;
* **as root** (CI, containers) a user namespace would keep uid 0, which the kernel exempts
  from the process limit, so the sandbox drops to an unused uid of its own instead
  (``setpriv``, with no-new-privileges and an empty capability set); its folder is given
  to that uid.
"""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

from .base import LaunchSpec, Launcher, SandboxUnavailable, which
from .pyenv import python_paths

INSIDE = Path("/aiaas")
# Files of /etc a Python process uses; the rest of /etc (keys, the server's configuration,
# the database's) stays out.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "nsswitch.conf",
        "passwd", "group", "hosts", "os-release", "mime.types", "ssl/certs")
_ENV_PREFIXES = ("CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH_", "PYTORCH_", "NCCL_", "LC_")
_ENV_NAMES = ("LANG", "TZ", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS")
# uids a root server gives its sandboxes: far above any real account's.
_UID_BASE, _UID_SPAN = 1_900_000_000, 1_000_000
_MiB = 1024 * 1024


class BwrapLauncher(Launcher):
    name = "bwrap"
    isolates = True

    def __init__(self, python: str, hidden: list[Path], tmp_mb: int = 1024, gpus: bool = False) -> None:
        super().__init__(python)
        # CUDA maps large private regions of its own; on a GPU machine the memory limit is the
        # executor's watch alone (not RLIMIT_DATA), until that is measured on GPUs.
        self._data_limit = not gpus
        self._bwrap = which("bwrap")
        if self._bwrap is None:
            raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed")
        self._root = os.geteuid() == 0
        if self._root and which("setpriv") is None:
            raise SandboxUnavailable("`setpriv` (util-linux) is missing: a root server needs it to drop to a "
                                     "sandbox uid")
        if which("prlimit") is None:
            raise SandboxUnavailable("`prlimit` (util-linux) is missing: the sandbox sets its limits with it")
        self._tmp_mb = tmp_mb
        # Options of newer releases (0.7/0.8); older ones (Ubuntu 22.04's 0.6) go without them.
        usage = subprocess.run([self._bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
        self._has_size = "--size" in usage
        self._has_disable_userns = "--disable-userns" in usage
        self._python_paths = python_paths(python, hidden)
        self._check()

    def describe(self) -> str:
        how = "as root, one unused uid per sandbox" if self._root else "in a user namespace"
        return f"bubblewrap ({self._bwrap}, {how})"

    def folder_inside(self, spec: LaunchSpec) -> str:
        return str(INSIDE / "run")

    def shared_inside(self, spec: LaunchSpec, name: str) -> str:
        return str(INSIDE / name)

    def _check(self) -> None:
        """Build a sandbox once at start: a kernel without user namespaces fails here, not in a run."""
        with tempfile.TemporaryDirectory(prefix="aiaas-probe-") as empty:
            probe = LaunchSpec(owner="probe", module="", args=[], folder=Path(empty), folder_writable=False)
            argv = self._argv(probe, uid=None)
            argv = argv[: argv.index("--")] + ["--", "true"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise SandboxUnavailable(f"bubblewrap cannot build a sandbox here: {done.stderr.strip()}")

    # -- the command line -----------------------------------------------------
    def _argv(self, spec: LaunchSpec, uid: int | None) -> list[str]:
        assert self._bwrap is not None
        # bubblewrap's own init is the sandbox's first process (it reaps orphans, and keeps the
        # parent-death signal that a uid change would clear): when it dies, by a kill from
        # outside or when the user's process exits, every process in the sandbox dies.
        args = [self._bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "aiaas"]
        if self._root:
            # Only to drop to the sandbox uid with setpriv; every capability is gone after it.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        else:
            args += ["--unshare-user", *(["--disable-userns"] if self._has_disable_userns else [])]
        if spec.die_with_parent:
            args += ["--die-with-parent"]
        dirs: set[Path] = set()
        binds: list[str] = []

        def parents(dest: Path) -> None:
            dirs.update(p for p in dest.parents if p != Path("/"))

        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                binds += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                binds += ["--ro-bind", str(host), str(host)]
        binds += ["--ro-bind", "/usr", "/usr", "--ro-bind-try", "/sys", "/sys"]
        for name in _ETC:
            binds += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        dirs.add(Path("/etc"))
        dirs.add(Path("/etc/ssl"))
        for path in self._python_paths:
            if path.is_relative_to("/usr"):
                continue
            parents(path)
            binds += ["--ro-bind", str(path), str(path)]
        for path in spec.read_only:
            parents(path)
            binds += ["--ro-bind", str(path), str(path)]
        for device in sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri")):
            binds += ["--dev-bind", device, device]
        mine = INSIDE / "run"
        dirs.add(INSIDE)
        binds += ["--bind" if spec.folder_writable else "--ro-bind", str(spec.folder), str(mine)]
        for name, host in spec.shared_ro.items():
            binds += ["--ro-bind", str(host), str(INSIDE / name)]
        for name, host in spec.shared_rw.items():
            binds += ["--bind", str(host), str(INSIDE / name)]
        tmp_mb = min(self._tmp_mb, spec.limits.disk_mb or self._tmp_mb)
        size = ["--size", str(tmp_mb * _MiB)] if self._has_size else []
        mkdirs: list[str] = []
        for d in sorted(dirs - {Path("/tmp"), Path("/dev"), Path("/dev/shm")}, key=lambda p: len(p.parts)):
            mkdirs += ["--perms", "0755", "--dir", str(d)]
        # The private /tmp first, the binds on top: a Python environment under /tmp (a checkout
        # or virtualenv there, as CI's can be) must not be hidden by it.
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", *size, "--tmpfs", "/tmp",
                 "--perms", "1777", *size, "--tmpfs", "/dev/shm",
                 *mkdirs, *binds,
                 "--remount-ro", "/", "--chdir", str(mine), "--clearenv"]
        for key, value in self._env(spec).items():
            args += ["--setenv", key, value]
        args.append("--")
        if uid is not None:
            args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                     "--inh-caps=-all", "--bounding-set=-all"]
        limits = spec.limits
        args += ["prlimit", "--core=0:0"]
        if limits.processes:
            args.append(f"--nproc={limits.processes}:{limits.processes}")
        if limits.memory_mb and self._data_limit:
            # Private writable memory per process: an allocation past it fails at once (MemoryError)
            # instead of the machine swapping; the executor also watches the sum over processes.
            args.append(f"--data={limits.memory_mb * _MiB}:{limits.memory_mb * _MiB}")
        if limits.disk_mb:
            args.append(f"--fsize={limits.disk_mb * _MiB}:{limits.disk_mb * _MiB}")
        args += ["--", self.python, "-m", spec.module, *spec.args] if spec.module else ["--", "true"]
        return args

    def _env(self, spec: LaunchSpec) -> dict[str, str]:
        """A clean environment: nothing of the server's (database URL, cloud keys) leaks in."""
        env = {k: v for k, v in os.environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}
        bin_dir = str(Path(self.python).parent)
        env.update({
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": env.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AIAAS_SANDBOX_LIMITS": spec.limits.as_env(),
        })
        env.update(spec.env)
        return env

    # -- starting -------------------------------------------------------------
    def start(self, spec: LaunchSpec) -> subprocess.Popen[bytes]:
        uid = None
        if self._root:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            owned = [spec.folder] if spec.folder_writable else []
            for path in [*owned, *spec.shared_rw.values()]:
                os.chown(path, uid, uid)
                if path in owned:
                    self.own_like(path, path)
        argv = self._argv(spec, uid)
        # bubblewrap tells the host pid of its child (the sandbox's init) on --info-fd, then closes it.
        read_end, write_end = os.pipe()
        argv[1:1] = ["--info-fd", str(write_end)]
        try:
            proc = subprocess.Popen(argv, stdin=spec.stdin, stdout=spec.stdout, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/", pass_fds=(write_end,))
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as info:
            text = info.read()
        try:
            proc.user_pid = int(json.loads(text)["child-pid"])  # type: ignore[attr-defined]
        except (ValueError, KeyError):
            pass  # bubblewrap failed to build the sandbox: it exits, and the caller sees that
        return proc
