"""The seccomp filter of the kernel: bubblewrap installs it (``bwrap --seccomp FD``, local backend); the docker
backend's kernel loads it onto itself (:func:`install`) before it becomes ipykernel, on top of the engine's
own seccomp profile (which lets ``io_uring`` and ``ptrace`` through).

A deny-list of system calls a Jupyter kernel running PyTorch never needs and that widen what a hostile
cell can reach: the kernel keyrings (``keyctl``, ``add_key``, ``request_key``: keys of the host's login
session), new namespaces (``unshare``, ``setns``, ``clone``/``clone3`` with namespace flags: a user
namespace hands out capabilities over the kernel's attack surface), ``io_uring``, ``bpf``,
``perf_event_open``, ``userfaultfd``, ``ptrace`` and cross-process memory access, mounts, kernel
modules, kexec, reboot, swap, clocks, ``TIOCSTI`` (typing into a terminal). Denied calls fail with
``EPERM`` (``clone3`` with ``ENOSYS``, so libc falls back to ``clone``, whose flags can be checked);
calls of another architecture's ABI kill the process.

Compiled with libseccomp (``pyseccomp``, a ctypes binding to the ``libseccomp2`` that Debian and
Ubuntu ship) and cached per process.

>>> bpf = filter_bpf()
>>> len(bpf) % 8, len(bpf) > 100
(0, True)
"""

from __future__ import annotations

import errno
import functools
import os

DENIED = (
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # namespaces
    "unshare", "setns",
    # large kernel attack surface a kernel never needs
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    "fanotify_init", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    # System V shared memory: segments outlive their processes and count in no process's RSS, so the memory
    # watchdog (no cgroup) would not see them (torch and multiprocessing use /dev/shm, which is capped)
    "shmget",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # mounts
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr",
    # the machine
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "vhangup", "iopl", "ioperm", "modify_ldt", "uselib",
)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                         0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
TIOCSTI = 0x5412


class SeccompUnavailable(RuntimeError):
    """libseccomp (or its Python binding) is missing."""


def _build_filter():
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as e:
        raise SeccompUnavailable(f"libseccomp is not available ({type(e).__name__}: {e})") from None
    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError):
            pass  # not a syscall on this architecture (e.g. iopl on arm64)
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    return f


def install() -> None:
    """Load the filter onto this process and its future children (sets ``no_new_privs``); irreversible."""
    _build_filter().load()


@functools.lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled BPF program (raises :class:`SeccompUnavailable` without libseccomp)."""
    f = _build_filter()
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb", closefd=True) as out:
            f.export_bpf(out)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
    return b"".join(chunks)


def filter_fd() -> int:
    """A fresh descriptor holding the program, for ``bwrap --seccomp FD`` (the caller closes it)."""
    data = filter_bpf()
    fd = os.memfd_create("interp-agent-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
