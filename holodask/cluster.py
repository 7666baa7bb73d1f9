"""Choice of the Dask scheduler: the one place that sets up where holodask computes.

``holodask run``, ``holodask stats`` and the Python API all go through
:func:`compute_context`::

    with compute_context(SchedulerOptions(cluster="local", workers=4)) as client:
        result = compute_with_progress(lazy_array)

Scheduler choices (in :class:`SchedulerOptions`):

* nothing set: Dask's threaded scheduler in this process, no set-up
  (``workers`` or ``threads_per_worker`` start a local cluster; ``memory_limit`` alone is the
  budget of the threads, see :mod:`holodask.memory`);
* ``cluster="local"``: a :class:`distributed.LocalCluster` of process workers
  (``workers``, ``threads_per_worker``, ``memory_limit`` such as ``"4GB"``);
* ``scheduler="tcp://HOST:PORT"`` or the path of a scheduler file: an existing cluster;
* ``cluster="slurm"|"pbs"|"sge"|"lsf"``: batch jobs through dask-jobqueue, configured
  by a YAML file (``cluster_config``; see ``configs/slurm.yaml``) and scaled to
  ``jobs`` jobs;
* ``client=``: an existing :class:`distributed.Client`, used as is and not closed.

With a distributed scheduler the dashboard link is printed to stderr (unless
``quiet``).  A progress bar is shown for computations that take more than a
second, unless ``quiet`` or stderr is not a terminal.  ``report="FILE.html"``
saves Dask's performance report (this needs a distributed scheduler; a local
cluster is started for it when no other was chosen).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import dask

from holodask.errors import HolodaskError, ParameterError

logger = logging.getLogger(__name__)

#: values of ``--cluster`` -> dask-jobqueue class name (``None`` for the local cluster)
CLUSTER_KINDS: dict[str, str | None] = {
    "local": None,
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}
JOB_CLUSTER_KINDS = tuple(kind for kind, cls in CLUSTER_KINDS.items() if cls)

#: keys of a cluster config file that holodask reads itself (not passed to dask-jobqueue)
HOLODASK_CONFIG_KEYS = {
    "jobs": "number of batch jobs to submit (``--jobs`` overrides it)",
    "wait_for_workers_s": "seconds to wait for the first worker before giving up",
}

#: dask-jobqueue arguments that holodask sets itself or that make no sense in a file
_NOT_CONFIG_KEYS = {
    "self", "scheduler", "config_name", "base_class_kwargs", "job_cls", "loop",
    "asynchronous", "job_kwargs", "n_workers", "kwargs", "args",
    # deprecated by dask-jobqueue in favour of job_extra_directives, job_script_prologue, ...
    "extra", "env_extra", "header_skip", "job_extra",
}

INSTALL_HINT = (
    "dask-jobqueue is needed for --cluster {kind}; install it with "
    "`pip install 'holodask[cluster]'` (or `pip install dask-jobqueue`)"
)

DEFAULT_WAIT_FOR_WORKERS_S = 300.0
#: the dashboard of the clusters holodask starts: this machine only, unless asked
DEFAULT_DASHBOARD = "127.0.0.1:8787"
#: where dask-jobqueue writes the temporary TLS credentials the batch jobs read (in the home folder,
#: which the nodes share; created private)
DEFAULT_TLS_FOLDER = "~/.cache/holodask/tls"
PROGRESS_MINIMUM_S = 1.0


@dataclass
class SchedulerOptions:
    """Where and how to compute; built from CLI arguments or Python keywords.

    Parameters
    ----------
    cluster : {None, "threads", "local", "slurm", "pbs", "sge", "lsf"}
        Kind of cluster to start; ``None`` means the threaded scheduler (or a local
        cluster when ``workers``/``threads_per_worker`` are set).
    workers, threads_per_worker, memory_limit
        Size of a local cluster: worker processes, threads in each, memory limit of
        each worker (``"4GB"``, bytes, or ``"auto"``). With the threaded scheduler,
        ``memory_limit`` is the run's memory budget (default: what is available).
    scheduler : str
        Address ``tcp://HOST:PORT`` (or ``HOST:PORT``) of a running scheduler, or the
        path of its scheduler file.
    cluster_config : path or mapping
        YAML file (or already parsed mapping) with the keyword arguments of the
        dask-jobqueue cluster: cores, processes, memory, walltime, queue, account,
        job_extra_directives, interface, local_directory, ... plus ``jobs`` and
        ``wait_for_workers_s``.
    jobs : int
        Number of batch jobs to submit (default: the config's ``jobs``, else 1).
    quiet : bool
        No progress bar and no dashboard message.
    report : path
        Save Dask's HTML performance report there.
    scratch : path
        Folder for temporary and spilled data (workers' ``local_directory``).
    client : distributed.Client
        Existing client to use as is; it is not closed afterwards.
    wait_for_workers_s : float
        How long to wait for the first batch-job worker.
    dashboard_address : str
        Where the dashboard of a cluster holodask starts listens (default
        ``127.0.0.1:8787``, this machine only; ``:8787`` for every interface).
    tls : bool
        Clusters holodask starts use TLS: the credentials configured for Dask
        (``distributed.comm.tls``), else temporary ones made for the run
        (``Security.temporary()``). False: plain tcp, open to whoever reaches the port.
    protected : tuple of paths
        Files the performance report must not overwrite (the run's inputs and outputs).
    """

    cluster: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int | None = None
    scheduler: str | None = None
    cluster_config: str | os.PathLike | Mapping[str, Any] | None = None
    jobs: int | None = None
    quiet: bool = False
    report: str | os.PathLike | None = None
    scratch: str | os.PathLike | None = None
    client: Any = field(default=None, repr=False)
    wait_for_workers_s: float | None = None
    dashboard_address: str | None = None
    tls: bool = True
    protected: tuple = ()

    def __post_init__(self) -> None:
        if self.cluster is not None:
            kind = str(self.cluster).strip().lower()
            if kind == "threads":
                kind = None
            elif kind not in CLUSTER_KINDS:
                raise ParameterError(
                    f"cluster: expected one of {', '.join(CLUSTER_KINDS)} (or 'threads'), "
                    f"got {self.cluster!r}"
                )
            self.cluster = kind
        for name in ("workers", "threads_per_worker", "jobs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ParameterError(f"{name}: expected a positive integer, got {value!r}")
        if self.memory_limit is not None and not isinstance(self.memory_limit, (str, int)):
            raise ParameterError(f"memory_limit: expected a size such as '4GB', got {self.memory_limit!r}")
        chosen = [name for name, on in (
            ("cluster", self.cluster is not None),
            ("scheduler", self.scheduler is not None),
            ("client", self.client is not None),
        ) if on]
        if len(chosen) > 1:
            raise ParameterError(f"{' and '.join(chosen)}: give only one of cluster, scheduler and client")

    @property
    def kind(self) -> str:
        """What :func:`compute_context` will use: 'threads', 'local', 'scheduler',
        'client' or a batch system ('slurm', ...)."""
        if self.client is not None:
            return "client"
        if self.scheduler is not None:
            return "scheduler"
        if self.cluster is not None:
            return self.cluster
        if self.threads_per_worker is not None:
            return "local"
        if self.workers is not None:
            return "local"
        if self.report is not None:
            return "local"
        return "threads"


# --------------------------------------------------------------------------- CLI


def add_scheduler_arguments(parser) -> None:
    """Add the scheduler options (``--cluster``, ``--workers``, ...) to an argparse parser."""
    group = parser.add_argument_group(
        "scheduler",
        "where to compute (default: threads in this process)",
    )
    group.add_argument(
        "--cluster", choices=list(CLUSTER_KINDS), default=None,
        help="start a cluster: 'local' worker processes, or batch jobs on slurm/pbs/sge/lsf "
             "(needs --cluster-config or dask-jobqueue's own configuration)",
    )
    group.add_argument("--workers", type=_positive_int, metavar="N",
                       help="number of local worker processes (implies --cluster local)")
    group.add_argument("--threads-per-worker", type=_positive_int, metavar="T",
                       help="threads in each local worker process")
    group.add_argument("--memory-limit", metavar="SIZE",
                       help="memory budget, e.g. 4GB: of the run (threads; default: the memory available, "
                            "cgroup limits included) or of each local worker; a reconstructed series "
                            "larger than half of it is kept in a Zarr store in --scratch")
    group.add_argument("--scheduler", metavar="ADDRESS_OR_FILE",
                       help="use a running Dask scheduler: tcp://HOST:PORT, tls://HOST:PORT (credentials "
                            "from Dask's distributed.comm.tls configuration) or a scheduler file")
    group.add_argument("--cluster-config", metavar="FILE",
                       help="YAML file for the batch-job cluster (see configs/slurm.yaml)")
    group.add_argument("--jobs", type=_positive_int, metavar="N",
                       help="number of batch jobs to submit (default: the config's 'jobs', else 1)")
    group.add_argument("--quiet", action="store_true",
                       help="no progress bar and no dashboard message")
    group.add_argument("--report", metavar="FILE.html",
                       help="save Dask's performance report (uses a distributed scheduler)")
    group.add_argument("--scratch", metavar="DIR",
                       help="folder for temporary and spilled data (default: beside the output)")
    group.add_argument("--dashboard-address", metavar="HOST:PORT",
                       help=f"where the dashboard of a cluster holodask starts listens "
                            f"(default {DEFAULT_DASHBOARD}: this machine only; ':8787' for every interface)")
    group.add_argument("--no-tls", dest="tls", action="store_false", default=None,
                       help="clusters holodask starts talk plain tcp instead of TLS (anyone who reaches "
                            "their ports can then run code as you)")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def options_from_args(args) -> SchedulerOptions:
    """Build :class:`SchedulerOptions` from parsed CLI arguments (missing ones are defaults)."""
    kwargs = {}
    for f in fields(SchedulerOptions):
        if f.name == "client":
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            kwargs[f.name] = value
    kwargs["quiet"] = bool(getattr(args, "quiet", False))
    return SchedulerOptions(**kwargs)


# ------------------------------------------------------------- cluster configuration


def job_cluster_class(kind: str):
    """The dask-jobqueue cluster class for ``kind`` ('slurm', 'pbs', 'sge', 'lsf')."""
    if kind not in JOB_CLUSTER_KINDS:
        raise ParameterError(f"cluster: expected one of {', '.join(JOB_CLUSTER_KINDS)}, got {kind!r}")
    try:
        import dask_jobqueue
    except ImportError:
        raise ParameterError(INSTALL_HINT.format(kind=kind)) from None
    return getattr(dask_jobqueue, CLUSTER_KINDS[kind])


def job_cluster_keys(kind: str) -> set[str]:
    """Keyword arguments a cluster config file may give for ``kind``."""
    cls = job_cluster_class(kind)
    from dask_jobqueue.core import Job, JobQueueCluster

    keys: set[str] = set()
    for func in (JobQueueCluster.__init__, cls.job_cls.__init__, Job.__init__):
        keys.update(inspect.signature(func).parameters)
    return (keys - _NOT_CONFIG_KEYS) | set(HOLODASK_CONFIG_KEYS)


def load_cluster_config(config, kind: str) -> dict[str, Any]:
    """Read and check a cluster config (YAML path or mapping) for ``kind``.

    Keys may use ``-`` or ``_`` (``job-extra-directives`` = ``job_extra_directives``).
    Returns the keyword arguments; raises :class:`ParameterError` for a missing or
    unreadable file, bad YAML, a non-mapping, or an unknown key.
    """
    if config is None:
        return {}
    if isinstance(config, Mapping):
        raw = dict(config)
        where = "cluster_config"
    else:
        import yaml

        path = Path(config).expanduser()
        where = f"cluster config {path}"
        if not path.is_file():
            raise ParameterError(f"cluster_config: file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ParameterError(f"cluster_config: cannot read {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ParameterError(f"{where}: not valid YAML{at}: {problem}") from None
        if raw is None:
            raw = {}
    if not isinstance(raw, Mapping):
        raise ParameterError(f"{where}: expected a mapping of settings (key: value), got {type(raw).__name__}")
    allowed = job_cluster_keys(kind)
    result: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            import difflib

            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParameterError(
                f"{where}: unknown key {key!r} for --cluster {kind}{hint}; "
                f"expected some of: {', '.join(sorted(allowed))}"
            )
        result[name] = value
    for name in ("job_extra_directives", "job_script_prologue", "job_directives_skip", "worker_extra_args"):
        value = result.get(name)
        if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple))):
            raise ParameterError(f"{where}: {name} must be a list of strings, got {value!r}")
    for name in ("jobs",):
        value = result.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ParameterError(f"{where}: {name} must be a positive integer, got {value!r}")
    return check_job_script_values(result, where)


#: config keys whose values go into the shell command that starts the workers in the job script
_COMMAND_KEYS = ("python", "worker_command", "name", "death_timeout", "local_directory", "interface",
                 "worker_extra_args")
#: config keys whose values go into a directive line of the job script (``#SBATCH -p VALUE``)
_DIRECTIVE_KEYS = ("queue", "account", "project", "walltime", "job_name", "job_cpu", "job_mem",
                   "resource_spec", "log_directory")
#: a shell word that needs no quoting; ``$NAME`` and ``${NAME}`` (expanded in the job) allowed
_PLAIN_WORD = re.compile(r"(?:[A-Za-z0-9_@%+=:,./~-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
_DIRECTIVE_WORD = re.compile(r"[^\s;&|<>`$()'\"\\]+")


def _line_breaks(where: str, key: str, value: Any) -> None:
    """Refuse a line break (or NUL) anywhere in a config value: it would start a new
    line, that is a new shell command, in the job script."""
    if isinstance(value, str):
        if any(c in value for c in "\n\r\0"):
            raise ParameterError(
                f"{where}: {key} holds a line break ({value!r}); every value of a job script "
                "is one line (give several lines as a list)"
            )
    elif isinstance(value, Mapping):
        for sub_key, item in value.items():
            _line_breaks(where, f"{key}.{sub_key}", item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _line_breaks(where, key, item)


def _shell_word(where: str, key: str, value: Any) -> Any:
    """A value of the worker's command line as one safe shell word (quoted where needed)."""
    if not isinstance(value, str) or _PLAIN_WORD.fullmatch(value):
        return value
    if "$" in value or "`" in value:
        raise ParameterError(
            f"{where}: {key} = {value!r} holds shell syntax; it goes into the command line of "
            "the job script: give a plain value (a $NAME or ${NAME} alone is expanded)"
        )
    return shlex.quote(value)


def check_job_script_values(config: dict[str, Any], where: str = "cluster_config") -> dict[str, Any]:
    """Validate (and quote) the values that dask-jobqueue writes into job scripts unquoted.

    No value may hold a line break; a directive value (``queue``, ``account``,
    ``walltime``, ...) is one word without shell characters; values of the
    worker's command line (``local_directory``, ``interface``, ``python``,
    ``worker_extra_args``, ...) are quoted where they are not plain words.
    """
    for key, value in config.items():
        _line_breaks(where, key, value)
    checked = dict(config)
    for key in _DIRECTIVE_KEYS:
        value = checked.get(key)
        if isinstance(value, str) and not _DIRECTIVE_WORD.fullmatch(value):
            raise ParameterError(
                f"{where}: {key} = {value!r} must be one word without spaces or shell characters "
                "(it becomes a directive of the job script; further directives go into "
                "job_extra_directives)"
            )
    for key in _COMMAND_KEYS:
        value = checked.get(key)
        if isinstance(value, (list, tuple)):
            checked[key] = [_shell_word(where, key, item) for item in value]
        elif value is not None:
            checked[key] = _shell_word(where, key, value)
    return checked


#: malloc settings of the worker processes. Dask's nanny sets MALLOC_TRIM_THRESHOLD_
#: to 64 KiB, which also stops glibc from raising its mmap threshold: every array
#: above 128 KiB (a 256 x 256 complex wave is 512 KiB) is then a fresh mmap, or
#: heap memory handed back to the system at every free, with page faults on each
#: new touch, and the per-hologram fit runs 1.7-3x slower on a worker than in the
#: client process (measured: 2.8-5.0 against 1.65 ms per fit). Fixed 16 MiB mmap
#: and trim thresholds keep such arrays on the heap.
MALLOC_THRESHOLD_BYTES = 16 * 2**20
WORKER_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MALLOC_THRESHOLD_BYTES),
                      "MALLOC_TRIM_THRESHOLD_": str(MALLOC_THRESHOLD_BYTES)}


def _worker_environment_config() -> dict[str, Any]:
    """Dask config that gives nanny-spawned workers :data:`WORKER_ENVIRONMENT`
    (replacing Dask's own MALLOC_TRIM_THRESHOLD_)."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.update(WORKER_ENVIRONMENT)
    return {"distributed.nanny.pre-spawn-environ": environ}


def tune_malloc() -> bool:
    """Set this process's glibc malloc thresholds as :data:`WORKER_ENVIRONMENT` does.

    For workers started elsewhere (an existing scheduler, batch jobs whose nanny
    applies Dask's own settings), and for the ``holodask`` command itself, whose
    threads otherwise map and unmap every large temporary array (page faults, and
    unmapping interrupts the other threads). Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, MALLOC_THRESHOLD_BYTES)) and bool(
        mallopt(m_trim_threshold, MALLOC_THRESHOLD_BYTES))


def register_worker_setup(client) -> None:
    """Have every worker of ``client`` (those that join later too) run :func:`tune_malloc`."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class _HolodaskWorkerSetup(WorkerPlugin):
        name = "holodask-worker-setup"

        def setup(self, worker):
            tune_malloc()

    try:
        client.register_plugin(_HolodaskWorkerSetup(), name=_HolodaskWorkerSetup.name)
    except Exception:  # an old scheduler or a restricted cluster: only speed is lost
        logger.debug("could not register the worker set-up plugin", exc_info=True)


def cluster_security(tls: bool = True):
    """The security of a cluster holodask starts: Dask's configured TLS credentials
    (``distributed.comm.tls``) where there are some, else temporary ones made now
    (``Security.temporary()``); ``None`` (plain tcp) when ``tls`` is False."""
    if not tls:
        return None
    from distributed.security import Security

    configured = Security()
    if configured.tls_ca_file and (configured.tls_scheduler_cert or configured.tls_worker_cert):
        return configured
    try:
        return Security.temporary()
    except ImportError:
        raise ParameterError(
            "tls: the temporary TLS credentials of a cluster need the package 'cryptography' "
            "(pip install cryptography), or configure Dask's TLS (distributed.comm.tls); "
            "--no-tls starts the cluster without encryption or authentication"
        ) from None


def _private_folder(path: str | os.PathLike) -> str:
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise ParameterError(f"shared_temp_directory: cannot create folder {folder}: {exc.strerror or exc}") from None
    return str(folder)


def make_job_cluster(kind: str, config=None, *, scratch=None, tls: bool = True, dashboard_address=None,
                     **overrides):
    """Build (without submitting any job) the dask-jobqueue cluster for ``kind``.

    ``config`` is a YAML path or mapping (see :func:`load_cluster_config`);
    ``scratch`` (a folder) replaces its ``local_directory``, and ``overrides``
    replace any key.  Holodask's own keys (``jobs``,
    ``wait_for_workers_s``) are dropped.  Use ``cluster.job_script()`` to see the
    job script.

    The scheduler and the workers talk TLS (:func:`cluster_security`; the
    workers read temporary credentials from ``shared_temp_directory``, by
    default the private folder :data:`DEFAULT_TLS_FOLDER`), and the dashboard
    listens on this machine only (``dashboard_address``, or the config's
    ``scheduler_options``, say otherwise). Values that go into the job script
    are checked (:func:`check_job_script_values`).
    """
    kwargs = load_cluster_config(config, kind)
    for name in HOLODASK_CONFIG_KEYS:
        kwargs.pop(name, None)
    if scratch is not None:  # the command line beats the file
        kwargs["local_directory"] = str(scratch)
    kwargs.update(overrides)
    kwargs = check_job_script_values(kwargs, "cluster_config")
    prologue = list(kwargs.get("job_script_prologue") or [])
    for key, value in WORKER_ENVIRONMENT.items():
        if not any(key in line for line in prologue):
            prologue.append(f"export {key}={value}")
    kwargs["job_script_prologue"] = prologue
    if "log_directory" in kwargs and kwargs["log_directory"]:
        Path(kwargs["log_directory"]).expanduser().mkdir(parents=True, exist_ok=True)
    scheduler_options = dict(kwargs.get("scheduler_options") or {})
    scheduler_options.setdefault("dashboard_address", dashboard_address or DEFAULT_DASHBOARD)
    kwargs["scheduler_options"] = scheduler_options
    if tls and kwargs.get("security", True) not in (False, None):
        kwargs["security"] = cluster_security()
        kwargs.setdefault("protocol", "tls://")
        kwargs["shared_temp_directory"] = _private_folder(kwargs.get("shared_temp_directory")
                                                          or DEFAULT_TLS_FOLDER)
    elif kwargs.get("security") in (True, False):
        kwargs.pop("security")
    cls = job_cluster_class(kind)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"cluster_config: cannot set up the {kind} cluster: {exc}") from None


# ------------------------------------------------------------------ the context


@dataclass
class _ComputeState:
    client: Any
    progress: bool
    scratch: Path | None = None
    memory_limit: int | None = None  # bytes: the budget of the threaded scheduler


_STATE: contextvars.ContextVar[_ComputeState | None] = contextvars.ContextVar("holodask_compute", default=None)


def _show_progress(options: SchedulerOptions) -> bool:
    if options.quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _say(options: SchedulerOptions, message: str) -> None:
    logger.info(message)
    if not options.quiet and not logger.isEnabledFor(logging.INFO):
        print(f"holodask: {message}", file=sys.stderr)


def _scratch_dir(options: SchedulerOptions) -> Path | None:
    if options.scratch is None:
        return None
    path = Path(options.scratch).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"scratch: cannot create folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise ParameterError(f"scratch: folder {path} is not writable")
    return path


def _connect(options: SchedulerOptions):
    from distributed import Client

    target = str(options.scheduler).strip()
    as_file = Path(target).expanduser()
    try:
        if "://" not in target and as_file.is_file():
            return Client(scheduler_file=str(as_file), timeout="20s")
        if "://" in target or (":" in target and "/" not in target):
            return Client(target, timeout="20s")
    except TypeError as exc:
        if "TLS" not in str(exc):
            raise
        raise ParameterError(
            f"scheduler: {target} talks TLS; give the client credentials in Dask's configuration "
            "(distributed.comm.tls.ca-file, .client.cert and .client.key, or the environment "
            "variables DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT, ..._CLIENT__KEY)"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ParameterError(f"scheduler: cannot connect to {target}: {exc}") from None
    raise ParameterError(
        f"scheduler: expected an address tcp://HOST:PORT or an existing scheduler file, got {target!r}"
    )


def _start_local(options: SchedulerOptions, scratch: Path | None, stack: contextlib.ExitStack):
    from distributed import Client, LocalCluster

    if options.cluster_config is not None:
        raise ParameterError(
            f"cluster_config: applies to --cluster {'/'.join(JOB_CLUSTER_KINDS)}, not to a local cluster"
        )
    # env: set in each worker process after Dask's own pre-spawn settings; scheduler and dashboard
    # on this machine only, talking TLS (other users of a shared login node cannot connect)
    kwargs: dict[str, Any] = {"processes": True, "env": dict(WORKER_ENVIRONMENT), "host": "127.0.0.1",
                              "dashboard_address": options.dashboard_address or DEFAULT_DASHBOARD}
    security = cluster_security(options.tls)
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    if options.workers is not None:
        kwargs["n_workers"] = options.workers
    if options.threads_per_worker is not None:
        kwargs["threads_per_worker"] = options.threads_per_worker
    if options.memory_limit is not None:
        kwargs["memory_limit"] = options.memory_limit
    if scratch is not None:
        kwargs["local_directory"] = str(scratch)
    try:
        with dask.config.set(_worker_environment_config()):
            cluster = LocalCluster(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"memory_limit/workers: cannot start a local cluster: {exc}") from None
    stack.callback(cluster.close)
    client = Client(cluster, security=security)
    stack.callback(client.close)
    return client


def _job_ids(cluster) -> list[str]:
    """Batch-system ids of the jobs a dask-jobqueue cluster has submitted so far."""
    ids = []
    for job in list(getattr(cluster, "workers", {}).values()):
        job_id = getattr(job, "job_id", None)
        if job_id:
            ids.append(str(job_id))
    return sorted(set(ids))


def _report_jobs(options: SchedulerOptions, cluster, kind: str) -> None:
    ids = _job_ids(cluster)
    if ids:
        _say(options, f"{kind} job ids: {' '.join(ids)}")


def _start_job_cluster(options: SchedulerOptions, scratch: Path | None, stack: contextlib.ExitStack):
    from distributed import Client

    kind = options.cluster
    for name in ("workers", "threads_per_worker", "memory_limit"):
        if getattr(options, name) is not None:
            raise ParameterError(
                f"{name}: applies to --cluster local; for --cluster {kind} set cores, processes "
                "and memory in the --cluster-config file"
            )
    config = load_cluster_config(options.cluster_config, kind)
    jobs = options.jobs or config.get("jobs") or 1
    wait_s = options.wait_for_workers_s or config.get("wait_for_workers_s") or DEFAULT_WAIT_FOR_WORKERS_S
    cluster = make_job_cluster(kind, config, scratch=scratch, tls=options.tls,
                               dashboard_address=options.dashboard_address)
    stack.callback(cluster.close)
    client = Client(cluster, security=getattr(cluster, "security", None))
    stack.callback(client.close)
    logger.debug("job script:\n%s", cluster.job_script())
    cluster.scale(jobs=jobs)
    _say(options, f"submitted {jobs} {kind} job(s); waiting for the first Dask worker")
    stack.callback(_report_jobs, options, cluster, kind)  # runs before the cluster closes
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, OSError):
        where = f" (settings from {options.cluster_config})" if isinstance(options.cluster_config, (str, os.PathLike)) else ""
        raise HolodaskError(
            f"no Dask worker started within {wait_s:g} s after submitting {jobs} {kind} job(s){where}; "
            "check the queue (squeue/qstat/bjobs), the queue/account/walltime settings and the "
            "job logs (log_directory)"
        ) from None
    return client


@contextlib.contextmanager
def compute_context(options: SchedulerOptions | None = None, **kwargs) -> Iterator[Any]:
    """Set up the scheduler chosen by ``options`` for the ``with`` block.

    Parameters
    ----------
    options : SchedulerOptions, optional
        The choice; keyword arguments (``cluster="local"``, ``workers=2``, ...)
        build one when it is not given, or replace its fields when it is.

    Yields
    ------
    distributed.Client or None
        The client of a distributed scheduler (current inside the block, so
        ``dask.compute`` uses it), or ``None`` for the threaded scheduler.

    Everything started here (clusters, batch jobs, clients) is closed on exit,
    also after an error; a client passed in is left open.
    """
    if options is None:
        options = SchedulerOptions(**kwargs)
    elif kwargs:
        from dataclasses import replace

        options = replace(options, **kwargs)
    kind = options.kind
    scratch = _scratch_dir(options)
    progress = _show_progress(options)
    report = None
    if options.report is not None:
        from holodask.io.safe_write import AtomicOutput

        report_path = Path(options.report).expanduser()
        if not report_path.parent.is_dir():
            raise ParameterError(f"report: folder {report_path.parent} does not exist")
        report = AtomicOutput(report_path, what="--report", kind="html", protected=options.protected)
        report.check()  # before any cluster starts

    with contextlib.ExitStack() as stack:
        if kind == "threads":
            settings: dict[str, Any] = {"scheduler": "threads"}
            if scratch is not None:
                settings["temporary_directory"] = str(scratch)
            stack.enter_context(dask.config.set(settings))
            if progress:
                from dask.diagnostics import ProgressBar

                stack.enter_context(ProgressBar(minimum=PROGRESS_MINIMUM_S, out=sys.stderr))
            client = None
        else:
            if kind == "local" and options.cluster is None and options.report is not None and not (
                options.workers or options.threads_per_worker or options.memory_limit
            ):
                _say(options, "the performance report needs a distributed scheduler; starting a local cluster")
            if kind == "client":
                client = options.client
            elif kind == "scheduler":
                client = _connect(options)
                stack.callback(client.close)
            elif kind == "local":
                client = _start_local(options, scratch, stack)
            else:
                client = _start_job_cluster(options, scratch, stack)
            stack.enter_context(client.as_current())
            link = _dashboard_link(client, options, kind)
            if link:
                _say(options, f"Dask dashboard: {link}")
            if report is not None:
                from distributed import performance_report

                stack.enter_context(report)  # written when complete, through the checked writer
                stack.enter_context(performance_report(filename=str(report.temp_path)))
        budget = None
        if kind == "threads" and options.memory_limit is not None:
            from holodask.memory import parse_size

            budget = parse_size(options.memory_limit)
        token = _STATE.set(_ComputeState(client=client, progress=progress, scratch=scratch, memory_limit=budget))
        stack.callback(_STATE.reset, token)
        yield client


def _dashboard_link(client, options: SchedulerOptions, kind: str) -> str | None:
    """The dashboard's address as it listens: a cluster holodask started listens on
    127.0.0.1 unless asked otherwise, whatever host name the scheduler's address has."""
    link = getattr(client, "dashboard_link", None)
    if not link or kind in ("client", "scheduler") or options.dashboard_address:
        return link
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(link)
    host = DEFAULT_DASHBOARD.rsplit(":", 1)[0]
    if kind != "local":
        scheduler_options = load_cluster_config(options.cluster_config, kind).get("scheduler_options") or {}
        if "dashboard_address" in scheduler_options:
            return link
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{host}{port}"))


def current_client():
    """The client of the enclosing :func:`compute_context` (``None`` for threads)."""
    state = _STATE.get()
    return state.client if state is not None else None


def progress_enabled() -> bool:
    """Whether the enclosing :func:`compute_context` shows progress bars."""
    state = _STATE.get()
    return bool(state is not None and state.progress)


def current_memory_limit() -> int | None:
    """The memory budget (bytes) given to the enclosing threaded :func:`compute_context`."""
    state = _STATE.get()
    return state.memory_limit if state is not None else None


def current_scratch() -> Path | None:
    """The ``--scratch`` folder of the enclosing :func:`compute_context` (``None``: none asked for)."""
    state = _STATE.get()
    return state.scratch if state is not None else None


def compute_with_progress(*collections, **compute_kwargs):
    """``dask.compute(*collections)`` with the progress bar of the current context.

    With a distributed scheduler the work is submitted and followed by
    :func:`distributed.progress` (on stderr); with threads the context's
    :class:`dask.diagnostics.ProgressBar` shows it.  Returns a tuple like
    :func:`dask.compute`.
    """
    state = _STATE.get()
    if state is None or state.client is None or not state.progress:
        return dask.compute(*collections, **compute_kwargs)
    from distributed import progress

    client = state.client
    futures = client.compute(list(collections), **compute_kwargs)
    with contextlib.redirect_stdout(sys.stderr):
        progress(futures, notebook=False, multi=False)
        print(file=sys.stderr)
    return tuple(client.gather(futures))


__all__ = [
    "CLUSTER_KINDS",
    "SchedulerOptions",
    "add_scheduler_arguments",
    "compute_context",
    "compute_with_progress",
    "current_client",
    "progress_enabled",
    "job_cluster_class",
    "load_cluster_config",
    "make_job_cluster",
    "options_from_args",
]
