"""`invops users hash-password`: the real console script, password on stdin or a terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from inventory_core.domain.passwords import verify_password
from tests.e2e.conftest import TIMEOUT_S, base_command, clean_env
from tests.polling import wait_until

HASH_PASSWORD = ["users", "hash-password"]


def run(stdin: bytes, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*base_command(), *HASH_PASSWORD],
        input=stdin.decode("utf-8", "surrogateescape"),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=TIMEOUT_S,
        check=False,
    )


def test_password_on_stdin_prints_a_hash_that_verifies(tmp_path: Path) -> None:
    result = run(b"s3cret Pa55", tmp_path)  # like `echo -n 's3cret Pa55' | invops ...`
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scrypt$")
    assert verify_password("s3cret Pa55", lines[0])
    assert not verify_password("s3cret Pa5", lines[0])
    assert "s3cret" not in result.stdout + result.stderr


def test_only_the_line_end_is_stripped_from_stdin(tmp_path: Path) -> None:
    result = run(b" padded \r\nsecond line ignored\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert verify_password(" padded ", result.stdout.strip())


@pytest.mark.parametrize("stdin", [b"", b"\n"])
def test_empty_password_exits_non_zero_with_one_line(stdin: bytes, tmp_path: Path) -> None:
    result = run(stdin, tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["invops: error: empty password: nothing to hash"]


def test_hash_password_is_listed_in_help(tmp_path: Path) -> None:
    result = subprocess.run(
        [*base_command(), "users", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0
    assert "hash-password" in result.stdout


# --------------------------------------------------------------------------- terminal


def _on_terminal(answers: list[str], tmp_path: Path) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its controlling terminal, answering
    each prompt in turn; returns (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes invops, or exits; never returns into pytest
        try:
            os.chdir(tmp_path)
            command = [*base_command(), *HASH_PASSWORD]
            os.execve(command[0], command, clean_env())
        finally:
            os._exit(127)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            # answer each prompt once, only after it has appeared
            prompts, answered = shown.count(b"assword: "), len(answers) - len(pending)
            if pending and prompts > answered:
                os.write(fd, pending.pop(0).encode() + b"\n")
        else:
            pytest.fail(f"no answer within {TIMEOUT_S} s; terminal showed {shown!r}")
    finally:
        status = _reap(pid)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode("utf-8", "replace")


def _reap(pid: int, grace_s: float = 10.0) -> int:
    """Wait for the child; kill it if it is still running after `grace_s`."""

    def exited() -> tuple[int, int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (done, status) if done else None

    try:
        return wait_until(
            exited, f"invops (pid {pid}) to exit", timeout_s=grace_s, interval_s=0.02
        )[1]
    except AssertionError:  # still running: killed, and the caller sees the SIGKILL status
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1]


def test_on_a_terminal_it_asks_twice_without_echo(tmp_path: Path) -> None:
    code, shown = _on_terminal(["tty-Secret", "tty-Secret"], tmp_path)
    assert code == 0, shown
    assert "Password:" in shown and "Repeat password:" in shown
    assert "tty-Secret" not in shown  # not echoed
    printed = [line for line in shown.splitlines() if line.startswith("scrypt$")]
    assert len(printed) == 1 and verify_password("tty-Secret", printed[0].strip())


def test_on_a_terminal_different_answers_print_nothing(tmp_path: Path) -> None:
    code, shown = _on_terminal(["first", "second"], tmp_path)
    assert code != 0
    assert "the two passwords differ" in shown
    assert "scrypt$" not in shown


def test_create_token_prints_it_once_with_config_lines_holding_only_its_hash(
    tmp_path: Path,
) -> None:
    import tomllib

    from inventory_core.domain.api_tokens import ApiToken
    from invops.config.schema import ApiTokenConfig

    done = subprocess.run(
        [*base_command(), "users", "create-token", "--name", "wms", "--role", "operator"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, _, rest = done.stdout.partition("\n")
    token = first.removeprefix("token (shown once): ")
    assert token.startswith("invops_") and len(token) > 40
    (entry,) = tomllib.loads(rest)["api_tokens"]
    assert token not in rest  # the lines to paste hold only the hash
    config = ApiTokenConfig.model_validate(entry)
    assert (config.name, config.role) == ("wms", "operator")
    assert ApiToken(config.name, config.role, config.token_hash).matches(token)
    again = subprocess.run(
        [*base_command(), "users", "create-token", "--name", "wms", "--role", "boss"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=TIMEOUT_S,
    )  # fmt: skip
    assert again.returncode == 2 and "boss" in again.stderr
