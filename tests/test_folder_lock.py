"""``folder_lock``, the one lock of the installer and the command line, between real processes: a live holder keeps
others out and is named, a holder that ends lets go and deletes the lock file, a SIGKILLed holder's file is taken
over."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from df4lcz_plugin.runtime.folder_lock import Busy, FolderLock, lock_path

# Takes the lock of argv[1], says so, holds it until its stdin is closed, then lets go (or SIGKILLs itself: argv[2]).
HOLDER = ("import os, sys; from df4lcz_plugin.runtime.folder_lock import FolderLock\n"
          "with FolderLock(sys.argv[1]):\n"
          "    print('held', flush=True); sys.stdin.read()\n"
          "    if sys.argv[2] == 'kill': os.kill(os.getpid(), 9)\n")


def _holder(folder, end):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), end], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "held\n"
    return child


@pytest.mark.parametrize("end", ["release", "kill"])
def test_a_live_holder_is_named_and_a_gone_one_is_not_obeyed(tmp_path, end):
    folder = tmp_path / "work"
    child = _holder(folder, end)
    try:
        record = lock_path(folder).read_bytes()
        with pytest.raises(Busy) as refused:
            FolderLock(folder)
        assert (refused.value.holder.pid, refused.value.holder.host) == (child.pid, socket.gethostname())
        assert f"process {child.pid} on {socket.gethostname()}, started 20" in str(refused.value)
        assert lock_path(folder).read_bytes() == record and os.listdir(tmp_path) == [".lock-work"]
        child.stdin.close()
        assert child.wait(timeout=60) == (-signal.SIGKILL if end == "kill" else 0)
    finally:
        child.kill()
    assert lock_path(folder).exists() == (end == "kill")  # a SIGKILLed holder leaves its file, unlocked
    with FolderLock(folder):
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()  # taken over
    assert os.listdir(tmp_path) == []
