"""A throwaway one-node SLURM cluster on loopback for the integration tests: install, configure, start, stop.

State, spool, logs and pid files live under one directory. The configuration must sit at the compiled-in
/etc/slurm/slurm.conf: the SLURM executor's job step strips SLURM_CONF before its inner `srun`. Any
configuration found there is put back on stop. Only daemons this module started are stopped, by the pids
it recorded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

# binary -> Debian package that ships it
PACKAGES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "munged": "munge"}
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_PID = Path("/run/munge/munged.pid")
SLURM_ETC = Path("/etc/slurm")
# Partition names match profiles/slurm/config.yaml, so the profile runs here unedited.
CPU_PARTITION = "cpu"
GPU_PARTITION = "gpu"


class SlurmUnavailable(RuntimeError):
    """This machine cannot run a SLURM cluster (the message says why)."""


def _which(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / binary).exists()), None
    )


def missing_packages() -> list[str]:
    """Debian packages whose binaries are not on this machine."""
    return sorted({pkg for binary, pkg in PACKAGES.items() if _which(binary) is None})


def unavailable_reason() -> str | None:
    """Why SLURM cannot run here (not root; packages missing and no apt-get), or None if it can."""
    if os.geteuid() != 0:
        return "needs root to install and start munged/slurmctld/slurmd"
    missing = missing_packages()
    if missing and shutil.which("apt-get") is None:
        return f"SLURM packages {missing} are missing and apt-get is not available to install them"
    return None


def install_missing() -> list[str]:
    """apt-get install the packages whose binaries are missing; return what was installed."""
    missing = missing_packages()
    if not missing:
        return []
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        # stale package lists are the usual cause; refresh once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0 or missing_packages():
        raise SlurmUnavailable(f"apt-get could not install {missing}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    """About 80% of this machine's RAM, in MB (what slurmd may hand out)."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages / 2**20 * 0.8)


def slurm_conf(root: Path, host: str, cpus: int, memory_mb: int, ports: tuple[int, int]) -> str:
    """slurm.conf text for one node `host` on 127.0.0.1 with a CPU and a GPU partition, files under `root`."""
    ctld_port, slurmd_port = ports
    return f"""\
ClusterName=pertcal-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# keep finished jobs visible to squeue: there is no accounting database for sacct
MinJobAge=86400
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={host} MaxTime=INFINITE State=UP
"""


# slurmd fails to start here with CgroupPlugin=disabled; autodetect works without systemd
CGROUP_CONF = "CgroupPlugin=autodetect\nIgnoreSystemd=yes\n"


class SlurmCluster:
    """A one-node cluster whose state, spool and logs live under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = SLURM_ETC / "slurm.conf"
        self.env = dict(os.environ)
        self.env.pop("SLURM_CONF", None)
        self._started: list[tuple[str, int]] = []  # (daemon, pid) in start order
        self._saved_etc: dict[Path, bytes | None] = {}  # config files as found, restored on stop

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def write_config(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # fresh ports each time: a daemon left over from an aborted run cannot collide with this one
        ports = (_free_port(), _free_port())
        texts = {
            self.conf: slurm_conf(self.root, self.host, os.cpu_count() or 1, _real_memory_mb(), ports),
            SLURM_ETC / "cgroup.conf": CGROUP_CONF,
        }
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        for path, text in texts.items():
            self._saved_etc.setdefault(path, path.read_bytes() if path.exists() else None)
            path.write_text(text)

    def start(self, timeout: float = 60) -> None:
        """Start munged (unless one answers already), slurmctld and slurmd; wait until the node is idle."""
        self.write_config()
        if not self._munge_answers():
            self._start_munged()
        self._start_daemon("slurmctld", self.root / "slurmctld.pid")
        self._start_daemon("slurmd", self.root / "slurmd.pid")
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = out.stdout.strip()
            if state.split() and all(s == "idle" for s in state.split()):
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"node not idle after {timeout}s (sinfo: {state!r})\n{self.daemon_logs()}")

    def stop(self) -> None:
        """Cancel jobs left on this cluster, terminate the daemons this object started (newest first), put the
        configuration back as it was."""
        if any(name == "slurmctld" for name, _ in self._started):
            # no job step may outlive slurmd
            self.run("scancel", "--user", "root", check=False)
            for _ in range(100):
                if not self.run("squeue", "-h", "-t", "running,completing", check=False).stdout.strip():
                    break
                time.sleep(0.1)
        while self._started:
            name, pid = self._started.pop()
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        for path, original in self._saved_etc.items():
            if original is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(original)
        self._saved_etc.clear()

    def daemon_logs(self, tail: int = 30) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-tail:]))
        return "\n".join(parts)

    def _munge_answers(self) -> bool:
        if not MUNGE_SOCKET.exists():
            return False
        cred = subprocess.run(["munge", "-n"], capture_output=True)
        if cred.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True).returncode == 0

    def _start_munged(self) -> None:
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        MUNGE_PID.unlink(missing_ok=True)
        subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], check=True)
        self._record("munged", MUNGE_PID)
        for _ in range(50):
            if self._munge_answers():
                return
            time.sleep(0.1)
        raise SlurmUnavailable("munged started but `munge -n | unmunge` fails")

    def _start_daemon(self, name: str, pidfile: Path) -> None:
        pidfile.unlink(missing_ok=True)
        result = subprocess.run([_which(name)], env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SlurmUnavailable(f"{name} failed to start: {result.stderr}\n{self.daemon_logs()}")
        self._record(name, pidfile)

    def _record(self, name: str, pidfile: Path) -> None:
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                self._started.append((name, int(pidfile.read_text().split()[0])))
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"{name} wrote no pid file {pidfile}\n{self.daemon_logs()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@contextmanager
def one_node_cluster(root: Path):
    """Install what is missing, start a cluster under `root`, yield it, and stop what was started."""
    reason = unavailable_reason()
    if reason:
        raise SlurmUnavailable(reason)
    install_missing()
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
