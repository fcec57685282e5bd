"""The QMP server (emu/monitor/qmp.py) against QEMU's own client library (qemu.qmp) and raw
sockets, over the stub backend (emu/monitor/stub.py) run by a thread standing in for the main
loop. Migration progress is stepped explicitly (x-stub-tick), so every event is deterministic."""
import asyncio
import json
import os
import socket
import tempfile
import time

import pytest

from emu.monitor.dispatch import Dispatcher
from emu.monitor.qmp import JsonStreamer, QmpServer, parse_address
from emu.monitor.stub import StubMainLoop, StubVM

qmp = pytest.importorskip("qemu.qmp")
from qemu.qmp import ExecuteError, QMPClient  # noqa: E402

TIMEOUT = 5.0


@pytest.fixture
def backend():
    d = Dispatcher()
    vm = StubVM(d)
    with StubMainLoop(d, vm, tick=None):
        yield d, vm


@pytest.fixture
def server(backend):
    with QmpServer(backend[0], "tcp:127.0.0.1:0") as srv:
        yield srv


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def connected(srv) -> QMPClient:
    client = QMPClient("test")
    await client.connect(("127.0.0.1", srv.port))
    return client


async def next_events(listener, n):
    return [await asyncio.wait_for(listener.get(), TIMEOUT) for _ in range(n)]


# ---- with qemu.qmp ------------------------------------------------------------------------
def test_greeting_negotiation_and_a_query(server):
    async def go():
        client = await connected(server)
        greeting = client.greeting._asdict()
        status = await client.execute("query-status")
        await client.disconnect()
        return greeting, status
    greeting, status = run(go())
    assert greeting == {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                            "package": "s2emu"}, "capabilities": []}}
    assert status == {"status": "running", "running": True, "singlestep": False}
    assert server.address == f"tcp:127.0.0.1:{server.port}" and server.port > 0


def test_stop_and_cont_send_events_with_timestamps(server):
    async def go():
        client = await connected(server)
        with client.listener() as listener:
            assert await client.execute("stop") == {}
            paused = await client.execute("query-status")
            assert await client.execute("cont") == {}
            events = await next_events(listener, 2)
        await client.disconnect()
        return paused, events
    before = time.time()
    paused, events = run(go())
    assert paused["status"] == "paused" and paused["running"] is False
    assert [e["event"] for e in events] == ["STOP", "RESUME"]
    for e in events:
        ts = e["timestamp"]
        assert set(ts) == {"seconds", "microseconds"} and 0 <= ts["microseconds"] < 1000000
        assert before - 1 <= ts["seconds"] <= time.time() + 1


def test_a_migration_from_setup_to_completed(server, backend):
    async def go():
        client = await connected(server)
        with client.listener("MIGRATION") as migration, client.listener("STOP") as stop:
            assert await client.execute("query-migrate") == {}
            assert await client.execute("migrate", {"uri": "tcp:10.0.0.2:4444"}) == {}
            started = await next_events(migration, 2)
            active = await client.execute("query-migrate")
            await client.execute("x-stub-tick", {"n": 3})
            done = await next_events(migration, 1) + await next_events(stop, 1)
            info = await client.execute("query-migrate")
            status = await client.execute("query-status")
        await client.disconnect()
        return started, active, done, info, status
    started, active, done, info, status = run(go())
    assert [e["data"] for e in started] == [{"status": "setup"}, {"status": "active"}]
    assert active["status"] == "active" and active["ram"]["remaining"] == active["ram"]["total"]
    assert [e["event"] for e in done] == ["MIGRATION", "STOP"]
    assert done[0]["data"] == {"status": "completed"}
    assert info["status"] == "completed" and "downtime" in info
    assert info["ram"]["remaining"] == 0 and info["ram"]["dirty-sync-count"] == 3
    assert info["ram"]["page-size"] == 4096
    assert status == {"status": "postmigrate", "running": False, "singlestep": False}


def test_cancel_parameters_capabilities_and_debug_queries(server, backend):
    async def go():
        client = await connected(server)
        with client.listener("MIGRATION") as migration:
            await client.execute("migrate-set-parameters",
                                 {"max-bandwidth": 1 << 30, "downtime-limit": 50})
            await client.execute("migrate-set-capabilities",
                                 {"capabilities": [{"capability": "auto-converge",
                                                    "state": True}]})
            params = await client.execute("query-migrate-parameters")
            await client.execute("migrate", {"uri": "unix:/tmp/nowhere", "detach": True})
            dirty = await client.execute("x-s2emu-dirty-log-stats", {"x-vm": 0})
            await client.execute("migrate_cancel")
            events = await next_events(migration, 3)
            info = await client.execute("query-migrate")
            s2 = await client.execute("x-s2emu-stage2-dump", {"x-vm": 1})
        await client.disconnect()
        return params, dirty, events, info, s2
    params, dirty, events, info, s2 = run(go())
    assert params["max-bandwidth"] == 1 << 30 and params["downtime-limit"] == 50
    assert "x-max-iterations" in params
    assert {"name": "ram", "logging": True, "dirty-pages": 0} in dirty["memslots"]
    assert [e["data"]["status"] for e in events] == ["setup", "active", "cancelled"]
    assert info["status"] == "cancelled" and info["cpu-throttle-percentage"] == 20
    assert s2["vmid"] == 1
    assert set(s2["mappings"][0]) == {"ipa", "pa", "size", "prot", "level"}
    assert ("x-s2emu-stage2-dump", {"x-vm": 1}) in backend[1].calls


@pytest.mark.parametrize("command, arguments, error_class, desc", [
    pytest.param("no-such-command", None, "CommandNotFound",
                 "The command no-such-command has not been found", id="unknown-command"),
    pytest.param("migrate", {}, "GenericError", "Parameter 'uri' is missing", id="missing-arg"),
    pytest.param("stop", {"now": True}, "GenericError", "Parameter 'now' is unexpected",
                 id="unexpected-arg"),
    pytest.param("qmp_capabilities", None, "CommandNotFound",
                 "Capabilities negotiation is already complete, command ignored",
                 id="negotiating-twice"),
])
def test_command_errors_reach_the_client(server, command, arguments, error_class, desc):
    async def go():
        client = await connected(server)
        with pytest.raises(ExecuteError) as err:
            await client.execute(command, arguments)
        alive = await client.execute("query-status")
        await client.disconnect()
        return err.value, alive
    err, alive = run(go())
    assert (err.error_class, err.error.error.desc) == (error_class, desc)
    assert alive["running"] is True


def test_every_negotiated_client_gets_events_and_quit_closes_only_its_own(server, backend):
    async def go():
        a, b = await connected(server), await connected(server)
        with b.listener(("STOP", "SHUTDOWN")) as events:
            await a.execute("stop")
            assert await a.execute("quit") == {}
            got = await next_events(events, 2)
        with pytest.raises(EOFError):                  # as with QEMU: the server hung up
            await a.disconnect()
        still = await b.execute("query-status")
        await b.disconnect()
        return got, still
    got, still = run(go())
    assert [e["event"] for e in got] == ["STOP", "SHUTDOWN"]
    assert still["status"] == "shutdown" and backend[1].quit.is_set()


def test_a_unix_socket(backend):
    path = os.path.join(tempfile.mkdtemp(), "qmp.sock")

    async def go(srv):
        client = QMPClient("unix")
        await client.connect(path)
        status = await client.execute("query-status")
        await client.disconnect()
        return status
    with QmpServer(backend[0], f"unix:{path}") as srv:
        assert srv.address == f"unix:{path}" and srv.port is None
        assert run(go(srv))["status"] == "running"
    assert not os.path.exists(path)
    os.rmdir(os.path.dirname(path))


# ---- raw sockets --------------------------------------------------------------------------
class Raw:
    def __init__(self, srv):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self.recv()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else json.dumps(data).encode())

    def recv(self):
        line = self.file.readline()
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    def negotiate(self):
        self.send(b'{"execute": "qmp_capabilities"}\n')
        assert self.recv() == {"return": {}}
        return self

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(server):
    client = Raw(server)
    yield client
    client.close()


NEGOTIATE = ("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")


@pytest.mark.parametrize("negotiated, data, expected", [
    pytest.param(False, b'{"execute": "query-status", "id": 7}\n',
                 {"error": dict(zip(("class", "desc"), NEGOTIATE)), "id": 7},
                 id="before-negotiation"),
    pytest.param(False, b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
                 {"error": {"class": "GenericError", "desc": "Capability 'oob' not available"}},
                 id="oob-not-offered"),
    pytest.param(True, b'{"execute": bad}\n',
                 {"error": {"class": "GenericError", "desc": "JSON parse error, Expecting value"}},
                 id="bad-json"),
    pytest.param(True, b'[1, 2]', {"error": {"class": "GenericError", "desc":
                 "JSON parse error, QMP input must be a JSON object"}}, id="array"),
    pytest.param(True, b'42\n', {"error": {"class": "GenericError", "desc":
                 "JSON parse error, QMP input must be a JSON object"}}, id="number"),
    pytest.param(True, b'}\n', {"error": {"class": "GenericError", "desc":
                 "JSON parse error, Expecting value"}}, id="stray-brace"),
    pytest.param(True, b'{"execute": "stop", "id": NaN}', {"error": {"class": "GenericError",
                 "desc": "JSON parse error, invalid literal 'NaN'"}}, id="nan"),
    pytest.param(True, b'{"execute": "\xff"}', {"error": {"class": "GenericError",
                 "desc": "JSON parse error, invalid UTF-8 sequence"}}, id="bad-utf8"),
    pytest.param(True, b'{"arguments": {}, "id": "x"}', {"error": {"class": "GenericError",
                 "desc": "QMP input lacks member 'execute'"}, "id": "x"}, id="no-execute"),
    pytest.param(True, b'{"execute": 3}', {"error": {"class": "GenericError",
                 "desc": "QMP input member 'execute' must be a string"}}, id="execute-not-str"),
    pytest.param(True, b'{"execute": "stop", "arguments": []}', {"error": {"class":
                 "GenericError", "desc": "QMP input member 'arguments' must be an object"}},
                 id="arguments-not-object"),
    pytest.param(True, b'{"execute": "stop", "exec-oob": "stop"}', {"error": {"class":
                 "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}},
                 id="unexpected-member"),
    pytest.param(True, b'{"execute": "nope", "id": {"a": [1]}}', {"error": {"class":
                 "CommandNotFound", "desc": "The command nope has not been found"},
                 "id": {"a": [1]}}, id="unknown-command-id-echoed"),
    pytest.param(True, b'{"execute": "cont", "id": null}', {"return": {}, "id": None},
                 id="null-id-echoed"),
    pytest.param(True, b'{"execute": "cont"}', {"return": {}}, id="no-id-none-echoed"),
])
def test_raw_requests(raw, negotiated, data, expected):
    if negotiated:
        raw.negotiate()
    raw.send(data)
    assert raw.recv() == expected
    raw.send(b'{"execute": "query-status", "id": "after"}')      # the connection goes on
    reply = raw.recv()
    assert reply["id"] == "after" and ("return" in reply) == negotiated


def test_values_split_and_joined_arbitrarily(raw):
    raw.negotiate()
    data = b'{"execute": "query-status", "id": 1}{"execute"\n:\n"stop", "id": "a}\\"{"}  ' \
           b'{"execute": "query-status", "id": 3}\n'
    for i in range(len(data)):                   # one byte at a time
        raw.send(data[i:i + 1])
    replies = [raw.recv() for _ in range(4)]
    assert replies[0] == {"return": {"status": "running", "running": True,
                                     "singlestep": False}, "id": 1}
    assert replies[1]["event"] == "STOP"                         # the event before the reply
    assert replies[2] == {"return": {}, "id": 'a}"{'}
    assert replies[3]["return"]["status"] == "paused"


def test_no_events_before_negotiation(server, raw):
    other = Raw(server).negotiate()
    other.send(b'{"execute": "stop", "id": 1}')
    assert other.recv()["event"] == "STOP" and other.recv() == {"return": {}, "id": 1}
    raw.send(b'{"execute": "qmp_capabilities", "id": 2}')
    assert raw.recv() == {"return": {}, "id": 2}                 # no STOP queued before it
    other.close()


def test_streamer_limits():
    s = JsonStreamer()
    out = s.feed(b"[" * 2000 + b"\n" + b'{"a": 1}')
    assert str(out[0]) == "nesting too deep" and out[1:] == [b'{"a": 1}']
    out = s.feed(b'{"a": "' + b"x" * (1 << 20) + b'"}\n{"b": 2}')
    assert str(out[0]) == "message too large" and out[1:] == [b'{"b": 2}']


# ---- life cycle ---------------------------------------------------------------------------
@pytest.mark.parametrize("address, family, sockaddr", [
    pytest.param("tcp:127.0.0.1:4444", socket.AF_INET, ("127.0.0.1", 4444), id="tcp"),
    pytest.param("tcp::4444,server=on,wait=off", socket.AF_INET, ("0.0.0.0", 4444),
                 id="tcp-any-qemu-options"),
    pytest.param("tcp:[::1]:0", socket.AF_INET6, ("::1", 0), id="tcp6"),
    pytest.param("unix:/tmp/q.sock", socket.AF_UNIX, "/tmp/q.sock", id="unix"),
])
def test_addresses(address, family, sockaddr):
    assert parse_address(address) == (family, sockaddr)


@pytest.mark.parametrize("address", ["tcp:localhost", "tcp:h:99999", "tcp:h:x", "unix:",
                                     "stdio", "tcp:h:1,wait=on", "4444"])
def test_bad_addresses(address):
    with pytest.raises(ValueError, match="monitor address"):
        QmpServer(Dispatcher(), address)


def test_bind_failures_name_the_address(server):
    taken = f"tcp:127.0.0.1:{server.port}"
    with pytest.raises(OSError, match=f"^cannot listen for QMP on {taken}: "):
        QmpServer(Dispatcher(), taken).start()
    with pytest.raises(OSError, match="^cannot listen for QMP on unix:/nonexistent/dir/s: "):
        QmpServer(Dispatcher(), "unix:/nonexistent/dir/s").start()


def test_a_stale_unix_socket_is_replaced_a_regular_file_is_not(tmp_path):
    stale = tmp_path / "stale.sock"
    socket.socket(socket.AF_UNIX).bind(str(stale))          # bound, never listened, closed
    with QmpServer(Dispatcher(), f"unix:{stale}") as srv:
        assert srv.sockname == str(stale)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(TIMEOUT)
            s.connect(str(stale))
            assert s.makefile("rb").readline().startswith(b'{"QMP": ')
    precious = tmp_path / "precious"
    precious.write_text("data")
    with pytest.raises(OSError, match=f"^cannot listen for QMP on unix:{precious}: "):
        QmpServer(Dispatcher(), f"unix:{precious}").start()
    assert precious.read_text() == "data"


def test_a_main_loop_that_does_not_answer():
    d = Dispatcher()                                              # nobody processes it
    with QmpServer(d, "tcp:127.0.0.1:0", timeout=0.2) as srv:
        client = Raw(srv).negotiate()
        client.send(b'{"execute": "query-status"}')
        assert client.recv() == {"error": {"class": "GenericError", "desc":
                                 "command 'query-status' timed out: the main loop did not "
                                 "answer in 0.2 s"}}
        client.send(b'{"execute": "stop"}')
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2                              # close() didn't wait on it
    assert client.file.readline() in (b"", b'{"error": {"class": "GenericError", "desc": '
                                      b'"the monitor is closing"}}\r\n')
    assert srv.clients == 0 and d.process(lambda c, a: {}) == 2   # both cancelled
    client.close()
