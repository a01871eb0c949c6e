"""The shipped systemd unit, checked and run here: a copy with its paths pointed at this
checkout, and a worker started under as much of the unit's sandbox as can be had without systemd.

The machine the tests run on has no systemd as PID 1, so ``systemd-run`` cannot start the unit.
Yet most of its sandbox is the kernel's work on the process, and ``python -m
tests.support.unit_sandbox UNIT -- COMMAND…`` does that work as systemd 252 would before
``ExecStart``: a mount namespace (``ProtectSystem=strict`` with ``ReadWritePaths``,
``PrivateTmp``, ``ProtectProc``, ``ProcSubset``; as root only), ``UMask``, ``LimitNOFILE`` (up to
this machine's hard limit), ``NoNewPrivileges``, ``CapabilityBoundingSet=`` (empty: even root
has no capability after ``execve``) and, through libseccomp as systemd does, one seccomp filter
each for ``SystemCallFilter`` (groups expanded by ``systemd-analyze syscall-filter``, systemd's
own tables) with ``SystemCallErrorNumber``, ``RestrictAddressFamilies``,
``MemoryDenyWriteExecute`` and ``RestrictNamespaces``. Left out: ``User=`` and ``PrivateUsers``
(the tree and its interpreter belong to root here), ``ProtectHome`` (the interpreter lives in
/root/.pyenv here), ``PrivateDevices``, the ``Protect{Kernel*,Clock,Hostname}`` options, and
the cgroup limits (``MemoryMax``, ``TasksMax``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import resource
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.processes import ROOT, start_listening

UNIT = ROOT / "deploy" / "systemd" / "streamside@.service"
TARGET = ROOT / "deploy" / "systemd" / "streamside.target"
INSTALLED = "/srv/streamside"  # where the unit expects the checkout


def unit_copy(folder: Path, port: int) -> Path:
    """The unit as instance ``port`` (``streamside@PORT.service``) in ``folder``, its paths
    pointed at this checkout, so ``systemd-analyze verify`` finds the ``ExecStart`` binary."""
    path = folder / f"streamside@{port}.service"
    path.write_text(UNIT.read_text().replace(INSTALLED, str(ROOT)))
    return path


def directives(unit: Path, section: str = "Service") -> dict[str, list[str]]:
    """``KEY=value`` lines of one section (continuation lines joined; a key set twice keeps
    both values, as ``SystemCallFilter=`` lists add up)."""
    found: dict[str, list[str]] = {}
    current = ""
    lines = unit.read_text().replace("\\\n", " ").splitlines()
    for line in (raw.strip() for raw in lines):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def exec_start(unit: Path, port: int) -> list[str]:
    """The unit's ``ExecStart`` as argv for instance ``port``."""
    return shlex.split(directives(unit)["ExecStart"][-1].replace("%i", str(port)))


def start_under_unit(
    unit: Path, port: int, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """The unit's own ``ExecStart`` for instance ``port``, in this checkout, under its sandbox
    (as far as ``main`` below applies it); returns once it listens."""
    command = [sys.executable, "-m", "tests.support.unit_sandbox", str(unit), "--"]
    return start_listening([*command, *exec_start(unit, port)], port, env, log_path)


# --- Applying the sandbox ----------------------------------------------------------------------
# libseccomp's ABI (seccomp.h): actions, comparison operators, and one argument comparison.
ALLOW = 0x7FFF0000
SCMP_CMP_LT, SCMP_CMP_EQ, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ = 2, 4, 6, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
CLONE_NEW = {
    "cgroup": 0x02000000,
    "ipc": 0x08000000,
    "net": 0x40000000,
    "mnt": 0x00020000,
    "pid": 0x20000000,
    "user": 0x10000000,
    "uts": 0x04000000,
}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
CLONE_NEWNS = 0x20000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1


def errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def libseccomp() -> ctypes.CDLL:
    """libseccomp (systemd's own dependency), loaded on first use."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


class Filter:
    """One seccomp filter; the kernel runs every loaded filter and the strictest result wins,
    which is how systemd stacks one filter per option."""

    def __init__(self, default_action: int) -> None:
        self.lib = libseccomp()
        self.ctx = self.lib.seccomp_init(default_action)
        assert self.ctx, "seccomp_init failed"

    def rule(self, action: int, name: str, *conditions: tuple[int, int, int, int]) -> None:
        number = self.lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call of this architecture (systemd skips those too)
        array = (ArgCmp * len(conditions))(*(ArgCmp(*c) for c in conditions))
        result = self.lib.seccomp_rule_add_array(self.ctx, action, number, len(conditions), array)
        assert result == 0, f"seccomp rule for {name}: {os.strerror(-result)}"

    def load(self) -> None:
        result = self.lib.seccomp_load(self.ctx)
        assert result == 0, f"seccomp_load: {os.strerror(-result)}"


def syscall_group(name: str) -> set[str]:
    """The system calls of ``name`` (``@group`` expanded recursively, or a plain call)."""
    if not name.startswith("@"):
        return {name}
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]  # the first line is the group's own name
    calls: set[str] = set()
    for entry in (line.strip() for line in listing):
        if entry and not entry.startswith("#"):
            calls |= syscall_group(entry)
    return calls


def allowed_syscalls(values: list[str]) -> set[str]:
    """``SystemCallFilter=`` values, an allow list: the first names what is allowed (plus
    ``@default``, as systemd adds), later ``~`` lists take calls away."""
    assert values and not values[0].startswith("~"), "only allow lists are handled"
    allowed = syscall_group("@default")
    for value in values:
        names = {call for word in value.lstrip("~").split() for call in syscall_group(word)}
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


def address_families_filter(names: list[str]) -> Filter:
    """``RestrictAddressFamilies=`` (an allow list): socket() of any other family fails with
    EAFNOSUPPORT, by ranges around the allowed numbers as systemd writes it."""
    allowed = sorted(int(getattr(socket, name)) for name in names)
    refuse = Filter(ALLOW)
    action = errno_action(errno.EAFNOSUPPORT)
    refuse.rule(action, "socket", (0, SCMP_CMP_LT, allowed[0], 0))
    refuse.rule(action, "socket", (0, SCMP_CMP_GT, allowed[-1], 0))
    for family in range(allowed[0] + 1, allowed[-1]):
        if family not in allowed:
            refuse.rule(action, "socket", (0, SCMP_CMP_EQ, family, 0))
    return refuse


def write_execute_filter() -> Filter:
    """``MemoryDenyWriteExecute=``, as systemd 252's seccomp rules: no mapping both writable
    and executable, and no making memory executable afterwards."""
    refuse = Filter(ALLOW)
    action = errno_action(errno.EPERM)
    both = PROT_WRITE | PROT_EXEC
    refuse.rule(action, "mmap", (2, SCMP_CMP_MASKED_EQ, both, both))
    refuse.rule(action, "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    refuse.rule(action, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    refuse.rule(action, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    return refuse


def namespaces_filter() -> Filter:
    """``RestrictNamespaces=true``: no new namespace, no joining one; clone3() (whose flags a
    filter cannot read) fails with ENOSYS, so glibc falls back to clone(), as under systemd."""
    refuse = Filter(ALLOW)
    action = errno_action(errno.EPERM)
    refuse.rule(action, "setns")
    refuse.rule(errno_action(errno.ENOSYS), "clone3")
    for flag in CLONE_NEW.values():
        refuse.rule(action, "unshare", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        refuse.rule(action, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
    return refuse


class MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def private_mounts(service: dict[str, list[str]]) -> None:
    """A mount namespace as systemd sets up for ``ProtectSystem=strict`` (all read-only but
    ``ReadWritePaths``), ``PrivateTmp`` (an empty /tmp and /var/tmp) and ``ProtectProc`` with
    ``ProcSubset`` (a /proc showing only this process's own)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    def read_only(path: bytes, flag: bool) -> None:
        attr = MountAttr(MOUNT_ATTR_RDONLY if flag else 0, 0 if flag else MOUNT_ATTR_RDONLY, 0, 0)
        size = ctypes.sizeof(attr)
        check(
            libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path, AT_RECURSIVE, ctypes.byref(attr), size),
            f"mount_setattr {path!r}",
        )

    check(libc.unshare(CLONE_NEWNS), "unshare")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    if service.get("ProtectSystem", [""])[-1] == "strict":
        writable = [
            path.encode()
            for value in service.get("ReadWritePaths", [])
            for path in value.split()
            if Path(path).exists()  # systemd refuses to start when one is missing
        ]
        for path in writable:
            check(libc.mount(path, path, None, MS_BIND | MS_REC, None), f"binding {path!r}")
        read_only(b"/", True)
        for path in writable:
            read_only(path, False)
    if service.get("PrivateTmp", [""])[-1] == "true":
        # The unit's tree is /srv/streamside; a checkout that lives under /tmp (CI clones
        # there) must stay visible in the fresh /tmp, as /srv would be: held open, bound back.
        kept = [(ROOT, os.open(ROOT, os.O_PATH))] if _under_tmp(ROOT) else []
        for path in (b"/tmp", b"/var/tmp"):
            check(
                libc.mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=01777"),
                f"a private {path!r}",
            )
        for folder, fd in kept:
            folder.mkdir(parents=True)
            source = f"/proc/self/fd/{fd}".encode()
            check(libc.mount(source, bytes(folder), None, MS_BIND | MS_REC, None), "the checkout")
            os.close(fd)
    options = {"invisible": "hidepid=invisible", "pid": "subset=pid"}
    chosen = [
        options[values[-1]]
        for key in ("ProtectProc", "ProcSubset")
        if (values := service.get(key)) and values[-1] in options
    ]
    if chosen:
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        check(libc.mount(b"proc", b"/proc", b"proc", flags, ",".join(chosen).encode()), "/proc")


def _under_tmp(path: Path) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(tmp) for tmp in ("/tmp", "/var/tmp"))


def apply(unit: Path) -> None:
    """Put this process under the unit's sandbox (what the kernel enforces per process)."""
    service = directives(unit)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())  # before /proc is hidden
    if os.geteuid() == 0:  # mounting needs root (systemd does it as root, before User=)
        private_mounts(service)
    enabled = {key for key, values in service.items() if values[-1] in {"true", "yes"}}
    os.umask(int(service["UMask"][-1], 8))
    # As far as this machine allows (systemd, as PID 1, may raise the hard limit; we may not).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(int(service["LimitNOFILE"][-1]), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    libc = ctypes.CDLL(None, use_errno=True)
    if service.get("CapabilityBoundingSet") == [""] and os.geteuid() == 0:
        # Others have no capability to drop; root loses them all at execve() with this.
        for cap in range(last_cap + 1):
            assert libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0, f"dropping capability {cap}"
    if "NoNewPrivileges" in enabled:
        assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    filters = []
    if "RestrictNamespaces" in enabled:
        filters.append(namespaces_filter())
    if "MemoryDenyWriteExecute" in enabled:
        filters.append(write_execute_filter())
    if families := service.get("RestrictAddressFamilies"):
        filters.append(address_families_filter(families[-1].split()))
    if calls := service.get("SystemCallFilter"):
        refused = errno_action(getattr(errno, service.get("SystemCallErrorNumber", ["EPERM"])[-1]))
        allow_list = Filter(refused)
        for call in sorted(allowed_syscalls(calls)):
            allow_list.rule(ALLOW, call)
        filters.append(allow_list)  # last: the others need prctl() and seccomp() to load
    for each in filters:
        each.load()


def main(argv: list[str]) -> None:
    unit, separator, *command = argv
    assert separator == "--" and command, "usage: unit_sandbox UNIT -- COMMAND..."
    apply(Path(unit))
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
