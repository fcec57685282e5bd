"""`s2emu run --incoming URI`: wait for a migrating guest, receive it whole, verify it, and
hand back a Session ready to run (QEMU's -incoming). Nothing runs until the stream ended and
the RAM checksums matched; a bad stream is one line and status 1."""
from __future__ import annotations

import argparse
import sys

from ..migration import incoming, listen_incoming, open_incoming
from .session import LEVELS, Session, console


def receive(a: argparse.Namespace) -> Session:
    lsock = listen_incoming(a.incoming)          # bound now: a busy port fails at once
    where = a.incoming
    if lsock is not None:
        host, port = lsock.getsockname()[:2]
        where = f"tcp:{host}:{port}"
    print(f"[s2emu] waiting for an incoming migration on {where}", file=sys.stderr, flush=True)
    with open_incoming(a.incoming, lsock) as source:
        m, inc = incoming(source, console=console(), max_level=LEVELS[a.hugepages],
                          icount=not a.no_icount)
    if lsock is not None:
        lsock.close()
    iters = sum(1 for i in inc.iterations if not i.get("final"))
    print(f"[s2emu] incoming migration of {m.vm.name}: {inc.bytes / (1 << 20):.2f} MiB, "
          f"{inc.pages} pages + {inc.zero_pages} zero, {iters} iterations, downtime "
          f"{inc.clock['downtime_ns'] / 1e6:.1f} ms; resuming at "
          f"{m.vm.clock.now_ns() / 1e6:.3f} ms", file=sys.stderr)
    print("[s2emu] RAM checksums at switch-over (destination, equal to the source's): " +
          " ".join(f"{k} {v}" for k, v in inc.digests.items()), file=sys.stderr, flush=True)
    return Session(a, m)
