"""A QEMU Machine Protocol server over the monitor's command queue (dispatch.Dispatcher).

The protocol is QEMU's docs/interop/qmp-spec.rst:

* on connect the server sends its greeting, {"QMP": {"version": ..., "capabilities": []}}
  (spec 2.2; no capability - in particular no "oob" - is offered);
* the session starts in capabilities negotiation mode: only "qmp_capabilities" is accepted
  (answered here, not by the main loop); anything else gets the error QEMU sends,
  CommandNotFound "Expecting capabilities negotiation with 'qmp_capabilities'" (spec 4);
* then commands {"execute": NAME, "arguments": {...}, "id": ANY} (spec 2.3) are run by the
  main loop through Dispatcher.call, one at a time per client, and answered
  {"return": ..., "id": ...} or {"error": {"class": ..., "desc": ...}, "id": ...} (spec 2.4);
  "id" is echoed exactly when the request had one;
* asynchronous events go to every client out of negotiation mode,
  {"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": US}} (spec 2.5;
  wall-clock time, as QEMU's g_get_real_time);
* input is a stream of JSON values, not lines (QEMU's json-streamer): a value may span lines and
  a line may hold several. Malformed JSON or a value that is not an object gets GenericError
  "JSON parse error, ..." and the connection stays usable; a request with a bad shape gets
  QEMU's qmp-dispatch messages ("QMP input lacks member 'execute'", ...).

"quit" is passed on like any command; after its reply the server closes that client (the main
loop does the exiting). Responses and events are written by a per-client writer thread, so a
client that stops reading never blocks the main loop (past MAX_BACKLOG queued messages it is
disconnected).
"""
from __future__ import annotations

import json
import os
import queue
import select
import socket
import stat
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout

from .dispatch import CommandError, Dispatcher

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
                                "package": "s2emu"},
                    "capabilities": []}}
NEGOTIATION_ERROR = "Expecting capabilities negotiation with 'qmp_capabilities'"
MAX_MESSAGE = 1 << 20           # bytes in one JSON value (QEMU: 64 MiB tokens)
MAX_NESTING = 1024              # QEMU's MAX_NESTING
MAX_BACKLOG = 10000             # unsent messages before a client that stopped reading is dropped
_WS = b" \t\r\n"


def parse_address(address: str) -> tuple[int, object]:
    """'tcp:HOST:PORT' (HOST may be empty or [IPv6]; PORT 0 picks one) or 'unix:PATH', with
    QEMU's ',server', ',server=on', ',wait=off', ',nowait' accepted and ignored ->
    (family, sockaddr). ValueError names the address."""
    spec, *opts = address.split(",")
    bad = [o for o in opts if o not in ("server", "server=on", "wait=off", "nowait")]
    if bad:
        raise ValueError(f"monitor address {address!r}: unsupported option {bad[0]!r}")
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if sep and port.isdigit() and int(port) < 65536:
            if host.startswith("[") and host.endswith("]"):
                return socket.AF_INET6, (host[1:-1], int(port))
            if ":" not in host:
                return socket.AF_INET, (host or "0.0.0.0", int(port))
    raise ValueError(f"monitor address {address!r}: expected tcp:HOST:PORT or unix:PATH")


class JsonStreamer:
    """Splits a byte stream into JSON values the way QEMU's json-streamer does: by counting
    brackets outside strings. A top-level value that is not an object or array runs to the end
    of its line. feed() returns the complete values' bytes, or an Exception for one too big or
    too deeply nested (the rest of that line is dropped)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.depth = 0
        self.in_str = self.escape = self.scalar = self.skip_line = False

    def feed(self, data: bytes) -> list:
        out: list = []
        for c in data:
            if self.skip_line:
                self.skip_line = c != 0x0A
                continue
            if not self.buf:
                if c in _WS:
                    continue
                self.scalar = c not in b"{["
            self.buf.append(c)
            if self.scalar:
                if c == 0x0A:
                    out.append(bytes(self.buf))
                    self.buf.clear()
            elif self.in_str:
                if self.escape:
                    self.escape = False
                elif c == 0x5C:                                  # backslash
                    self.escape = True
                elif c == 0x22:                                  # quote
                    self.in_str = False
            elif c == 0x22:
                self.in_str = True
            elif c in b"{[":
                self.depth += 1
            elif c in b"}]":
                self.depth -= 1
                if self.depth == 0:
                    out.append(bytes(self.buf))
                    self.buf.clear()
            too_deep = self.depth > MAX_NESTING
            if too_deep or len(self.buf) > MAX_MESSAGE:
                out.append(ValueError("nesting too deep" if too_deep else "message too large"))
                self.__init__()
                self.skip_line = c != 0x0A
        return out


def _reject_constant(name: str):
    raise ValueError(f"invalid literal {name!r}")


def decode_request(raw) -> dict:
    """The request object of one JSON value (bytes) -> dict; CommandError (GenericError) with
    QEMU's messages (monitor/qmp.c, qapi/qmp-dispatch.c) when it is not a valid request."""
    if isinstance(raw, Exception):
        raise CommandError(f"JSON parse error, {raw}")
    try:
        req = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CommandError("JSON parse error, invalid UTF-8 sequence") from None
    except json.JSONDecodeError as e:
        raise CommandError(f"JSON parse error, {e.msg}") from None
    except ValueError as e:
        raise CommandError(f"JSON parse error, {e}") from None
    if not isinstance(req, dict):
        raise CommandError("JSON parse error, QMP input must be a JSON object")
    return req


def check_request(req: dict) -> tuple[str, dict]:
    """(name, arguments) of a request object, or CommandError as qmp_dispatch_check_obj."""
    for key in req:
        if key not in ("execute", "arguments", "id"):
            raise CommandError(f"QMP input member '{key}' is unexpected")
    if "execute" not in req:
        raise CommandError("QMP input lacks member 'execute'")
    if not isinstance(req["execute"], str):
        raise CommandError("QMP input member 'execute' must be a string")
    args = req.get("arguments", {})
    if not isinstance(args, dict):
        raise CommandError("QMP input member 'arguments' must be an object")
    return req["execute"], args


class _Client:
    """One connection: a reader thread (requests, run one at a time) and a writer thread."""

    def __init__(self, server: "QmpServer", sock: socket.socket, peer: str) -> None:
        self.server, self.sock, self.peer = server, sock, peer
        self.negotiated = False
        self.closed = threading.Event()
        self.out: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read_loop, daemon=True,
                                       name=f"qmp-read {peer}")
        self.writer = threading.Thread(target=self._write_loop, daemon=True,
                                       name=f"qmp-write {peer}")

    def start(self) -> None:
        self.send(GREETING)
        self.writer.start()
        self.reader.start()

    def send(self, msg: dict) -> None:
        if self.out.qsize() > MAX_BACKLOG:             # it stopped reading: drop it
            self.close(hard=True)
        elif not self.finished:
            self.out.put(msg)

    finished = False

    def finish(self) -> None:
        """No more messages: the writer stops after what is queued."""
        if not self.finished:
            self.finished = True
            self.out.put(None)

    def close(self, hard: bool = False) -> None:
        """Stop: the reader's recv returns, the writer stops after what is queued (hard: at
        once, even if blocked on a peer that does not read)."""
        if not self.closed.is_set():
            self.closed.set()
            if hard or threading.current_thread() is self.reader:
                self.finish()
        try:
            self.sock.shutdown(socket.SHUT_RDWR if hard else socket.SHUT_RD)
        except OSError:
            pass

    def _write_loop(self) -> None:
        try:
            while (msg := self.out.get()) is not None:
                try:
                    data = json.dumps(msg)
                except (TypeError, ValueError) as e:                 # a result that isn't JSON
                    err = {"class": "GenericError", "desc": f"internal error: {e}"}
                    data = json.dumps({"error": err, **({"id": msg["id"]} if "id" in msg
                                                         else {})})
                self.sock.sendall(data.encode() + b"\r\n")
        except OSError:
            pass
        finally:
            self.close()
            self.sock.close()
            self.server._forget(self)

    def _read_loop(self) -> None:
        streamer = JsonStreamer()
        try:
            while not self.closed.is_set():
                data = self.sock.recv(65536)
                if not data:
                    break
                for raw in streamer.feed(data):
                    if not self._handle(raw):
                        return
        except OSError:
            pass
        finally:
            self.close()

    def _handle(self, raw) -> bool:
        """Answer one request; False when the connection is to end (quit)."""
        ident: dict = {}
        try:
            req = decode_request(raw)
            if "id" in req:
                ident = {"id": req["id"]}
            name, args = check_request(req)
            result = self._run(name, args)
        except CommandError as e:
            self.send({"error": {"class": e.error_class, "desc": e.desc}, **ident})
            return True
        self.send({"return": result, **ident})
        if name == "qmp_capabilities":       # events only after this reply (qemu.qmp relies on it)
            self.negotiated = True
        elif name == "quit":
            self.close()
            return False
        return True

    def _run(self, name: str, args: dict):
        if name == "qmp_capabilities":
            if self.negotiated:
                raise CommandError("Capabilities negotiation is already complete, command "
                                   "ignored", "CommandNotFound")
            for key, value in args.items():
                if key != "enable":
                    raise CommandError(f"Parameter '{key}' is unexpected")
                if not isinstance(value, list):
                    raise CommandError("Invalid parameter type for 'enable', expected: array")
                if value:
                    raise CommandError(f"Capability '{value[0]}' not available")
            return {}
        if not self.negotiated:
            raise CommandError(NEGOTIATION_ERROR, "CommandNotFound")
        return self.server._call(name, args, self.closed)


class QmpServer:
    """QMP on `address` ('tcp:HOST:PORT' or 'unix:PATH'; ValueError if it doesn't parse).

        server = QmpServer(dispatcher, "tcp:127.0.0.1:0").start()
        server.address          # 'tcp:127.0.0.1:40123', the bound port filled in
        ...
        server.close()
    """

    def __init__(self, dispatcher: Dispatcher, address: str, *, timeout: float = 60.0) -> None:
        self.dispatcher = dispatcher
        self.requested = address
        self.family, self._sockaddr = parse_address(address)
        self.timeout = timeout                  # seconds a command may wait for the main loop
        self.address = address                  # the bound address after start()
        self.sockname: object = None            # (host, port) or the socket's path
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"qmp-accept {address}")

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> "QmpServer":
        """Bind and listen now (OSError, one line naming the address, if that fails), then
        accept clients in a daemon thread."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            if self.family == socket.AF_UNIX:
                path = self._sockaddr
                try:                                   # a stale socket, as QEMU unlinks it
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._sockaddr)
            sock.listen(8)
        except OSError as e:
            sock.close()
            err = OSError(f"cannot listen for QMP on {self.requested}: {e.strerror or e}")
            err.errno = e.errno
            raise err from None
        self._sock = sock
        self.sockname = sock.getsockname()
        if self.family == socket.AF_UNIX:
            self.address = f"unix:{self.sockname}"
        else:
            host, port = self.sockname[:2]
            self.address = f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
        self.dispatcher.add_listener(self._on_event)
        self._thread.start()
        return self

    @property
    def port(self) -> int | None:
        """The bound TCP port (None for a Unix socket or before start())."""
        return self.sockname[1] if isinstance(self.sockname, tuple) else None

    def close(self) -> None:
        """Stop accepting, disconnect every client (a command in flight is cancelled if the
        main loop has not started it), remove a Unix socket's file."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.dispatcher.remove_listener(self._on_event)
        self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            clients = list(self._clients)
        # Gracefully: stop reading; a request in flight (e.g. the `quit` that ended the run)
        # still gets its reply; then the writers drain; then whatever is left is cut off.
        for c in clients:
            c.close()
        for c in clients:
            if c.reader.is_alive() and c.reader is not threading.current_thread():
                c.reader.join(2)
            c.finish()
        for c in clients:
            if c.writer.is_alive() and c.writer is not threading.current_thread():
                c.writer.join(2)
            c.close(hard=True)
        if self._sock is not None:
            self._sock.close()
            if self.family == socket.AF_UNIX:
                try:
                    os.unlink(self.sockname)
                except OSError:
                    pass
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> "QmpServer":
        return self if self._sock is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def clients(self) -> int:
        """Connected clients."""
        with self._lock:
            return len(self._clients)

    # ---- threads ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, peer = self._sock.accept()
            except OSError:
                continue
            client = _Client(self, conn, str(peer or "unix"))
            with self._lock:
                self._clients.add(client)
            client.start()

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)

    def _call(self, name: str, args: dict, closed: threading.Event):
        """Dispatcher.call, but giving up (and cancelling) when the client or server goes."""
        fut = self.dispatcher.submit(name, args)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return fut.result(timeout=0.05)
            except FutureTimeout:
                if closed.is_set() or self._closing.is_set():
                    fut.cancel()
                    raise CommandError("the monitor is closing") from None
                if time.monotonic() > deadline:
                    fut.cancel()
                    raise CommandError(f"command '{name}' timed out: the main loop did not "
                                       f"answer in {self.timeout:g} s") from None
            except CancelledError:
                raise CommandError("the monitor is closing") from None
            except CommandError:
                raise
            except Exception as e:
                raise CommandError(f"internal error: {type(e).__name__}: {e}") from None

    def _on_event(self, event: str, data: dict) -> None:
        now = time.time()
        msg = {"event": event, "data": data,
               "timestamp": {"seconds": int(now), "microseconds": int(now * 1e6) % 1000000}}
        with self._lock:
            clients = [c for c in self._clients if c.negotiated]
        for c in clients:
            c.send(msg)
