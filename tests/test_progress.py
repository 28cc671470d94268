"""Long commands show a progress bar with an ETA on a terminal and stay silent when stderr is a file."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

from conftest import PY, REPO, run_env
from test_trust_testing import option_text, save_release, tiny_state_dicts, write_pairs


def _terminal():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return master, slave


def _run_on_terminal(cmd, timeout=600) -> tuple[int, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal; its exit code and everything drawn there."""
    master, slave = _terminal()
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    drawn = b""
    try:
        while True:
            ready = select.select([master], [], [], 1)[0]
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    return code, drawn.decode(errors="replace")


def _tiny_test_run(tmp_path):
    data = write_pairs(tmp_path / "data", [(24, 24), (24, 32), (32, 24)])
    weights = save_release(tmp_path / "w", tiny_state_dicts(0))
    opt = tmp_path / "test.yml"
    opt.write_text(option_text(tmp_path, data, weights))
    return [PY, "scripts/test.py", "-opt", str(opt)]


def test_test_py_draws_a_bar_per_set_with_eta_on_a_terminal_only(tmp_path):
    cmd = _tiny_test_run(tmp_path)
    code, drawn = _run_on_terminal(cmd)
    assert code == 0, drawn[-3000:]
    assert re.search(r"testing Tiny: +100%\|.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d", drawn), drawn[-3000:]
    with open(tmp_path / "stderr.txt", "w") as plain:
        subprocess.run(cmd, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL, stderr=plain, timeout=600,
                       check=True)
    text = (tmp_path / "stderr.txt").read_text()
    assert "testing Tiny" not in text and "\r" not in text and "100%|" not in text


def test_evaluate_draws_a_bar_on_a_terminal(tmp_path):
    data = write_pairs(tmp_path / "data", [(24, 24), (24, 32)])
    cmd = [PY, "scripts/evaluate.py", "--protocol", "gopro", "--pred", str(data / "input"), "--gt",
           str(data / "target"), "--out", str(tmp_path / "report")]
    code, drawn = _run_on_terminal(cmd)
    assert code == 0, drawn[-3000:]
    assert re.search(r"scoring \S+: +100%\|.*\| 2/2 \[", drawn), drawn[-3000:]


def test_prepare_draws_a_bar_per_step_on_a_terminal(tmp_path):
    from test_data_prepare_gopro import make_large
    src = make_large(tmp_path / "src")
    cmd = [PY, "scripts/prepare_data.py", "gopro", "--src", str(src), "--dst", str(tmp_path / "out"),
           "--crop-size", "32", "--crop-stride", "16", "--val-crop", "16", "--workers", "1"]
    code, drawn = _run_on_terminal(cmd)
    assert code == 0, drawn[-3000:]
    for step in ("decoding", "cropping", "placing"):
        assert re.search(step + r" .*100%\|", drawn), (step, drawn[-3000:])
