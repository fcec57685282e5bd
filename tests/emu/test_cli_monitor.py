"""The monitors of a running s2emu, driven as people and tools drive QEMU's: the real
`qemu.qmp` client library over QMP (migrate, query-migrate, migrate_cancel, stop/cont, quit),
and the human monitor on stdin (the cover letter's `migrate -d tcp:...` workflow)."""
import asyncio
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from test_cli_migration import digests, free_port, start, wait_listening

qmp = pytest.importorskip("qemu.qmp")


def qmp_address(p: subprocess.Popen) -> tuple[str, int]:
    line = p.stderr.readline()
    m = re.search(r"QMP on tcp:([\d.]+):(\d+)", line)
    assert m, line
    return m.group(1), int(m.group(2))


async def until(client, status: set[str], timeout: float = 60.0) -> dict:
    for _ in range(int(timeout / 0.05)):
        info = await client.execute("query-migrate")
        if info.get("status") in status:
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"migration did not reach {status}: {info}")


def test_qmp_migration_with_qemu_qmp_client():
    port = free_port()
    dst = start("run", "--incoming", f"tcp:127.0.0.1:{port}")
    wait_listening(dst)
    src = start("run", "guests/dirtyram.elf", "--args", "2048 64 5 400", "--mem", "32M",
                "--qmp", "tcp:127.0.0.1:0")
    host, qport = qmp_address(src)

    async def session():
        client = qmp.QMPClient("test")
        await client.connect((host, qport))
        events = []

        async def collect():
            async for ev in client.events:
                events.append(ev)
        listener = asyncio.create_task(collect())
        assert (await client.execute("query-status"))["status"] == "running"
        await client.execute("migrate-set-parameters", {"max-bandwidth": 64 << 20,
                                                         "downtime-limit": 100})
        params = await client.execute("query-migrate-parameters")
        assert (params["max-bandwidth"], params["downtime-limit"]) == (64 << 20, 100)
        await client.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        info = await until(client, {"completed", "failed"})
        assert info["status"] == "completed" and info["ram"]["dirty-sync-count"] >= 1
        assert info["downtime"] <= 100 and info["ram"]["transferred"] > 0
        assert (await client.execute("query-status"))["status"] == "postmigrate"
        with pytest.raises(qmp.ExecuteError):
            await client.execute("cont")                   # the guest runs elsewhere now
        await client.execute("quit")
        await asyncio.sleep(0.2)
        listener.cancel()
        try:
            await client.disconnect()
        except (EOFError, ConnectionError):
            pass
        return [e["data"].get("status") for e in events if e["event"] == "MIGRATION"]
    statuses = asyncio.run(session())
    assert statuses[0] == "setup" and statuses[-1] == "completed"
    s_out, s_err = src.communicate(timeout=60)
    d_out, d_err = dst.communicate(timeout=120)
    assert src.returncode == 0 and dst.returncode == 0, (s_err, d_err)
    assert digests(s_err, "source") == digests(d_err, "destination")
    assert "dirtyram: 400 rounds, 2048 pages" in d_out


def test_qmp_cancel_stop_and_cont_leave_the_source_running():
    """A slow link; cancel half-way: logging off, the guest goes on; the destination that
    saw half a stream refuses to start."""
    port = free_port()
    dst = start("run", "--incoming", f"tcp:127.0.0.1:{port}")
    wait_listening(dst)
    src = start("run", "guests/dirtyram.elf", "--args", "2048 64 5 2000", "--mem", "32M",
                "--qmp", "tcp:127.0.0.1:0")
    host, qport = qmp_address(src)

    async def session():
        client = qmp.QMPClient("test")
        await client.connect((host, qport))
        await client.execute("stop")
        assert (await client.execute("query-status"))["status"] == "paused"
        await client.execute("cont")
        await client.execute("migrate-set-parameters", {"max-bandwidth": 1 << 20})
        await client.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        await until(client, {"active"})
        stats = await client.execute("x-s2emu-dirty-log-stats")
        assert any(s["logging"] for s in stats["memslots"])
        await client.execute("migrate_cancel")
        info = await until(client, {"cancelled"})
        stats = await client.execute("x-s2emu-dirty-log-stats")
        assert not any(s["logging"] for s in stats["memslots"])
        assert (await client.execute("query-status"))["status"] == "running"
        await client.execute("quit")
        try:
            await client.disconnect()
        except (EOFError, ConnectionError):
            pass
        return info
    info = asyncio.run(session())
    assert info["status"] == "cancelled"
    s_out, s_err = src.communicate(timeout=60)
    d_out, d_err = dst.communicate(timeout=60)
    assert src.returncode == 0, s_err
    assert "migration cancelled" in s_err
    assert dst.returncode == 1 and d_out == "" and "truncated" in d_err


def test_the_cover_letter_workflow_on_the_human_monitor():
    """Two terminals: `--incoming tcp:0:PORT` on one; on the other, dirtyram running and
    `migrate -d tcp:127.0.0.1:PORT` typed at its monitor; checksums printed on both ends."""
    port = free_port()
    dst = start("run", "--incoming", f"tcp:0:{port}")
    wait_listening(dst)
    src = subprocess.run(
        [sys.executable, "-m", "emu", "run", "guests/dirtyram.elf", "--args", "2048 64 5 300",
         "--mem", "32M", "--monitor", "stdio"], cwd=ROOT, text=True, capture_output=True,
        input=f"info status\nmigrate -d tcp:127.0.0.1:{port}\n", timeout=120)
    d_out, d_err = dst.communicate(timeout=120)
    assert src.returncode == 0 and dst.returncode == 0, (src.stderr, d_err)
    assert "VM status: running" in src.stderr
    assert "[s2emu] migration completed" in src.stderr
    assert digests(src.stderr, "source") == digests(d_err, "destination")
    assert "dirtyram: 300 rounds, 2048 pages" in d_out
