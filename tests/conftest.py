import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
GUESTS = os.path.join(ROOT, "guests")
LINUX_FETCH = os.path.join(ROOT, "guests", "linux", "fetch.py")


def linux_cache() -> str:
    """The Linux guest's cache, fetched (once: fetch.py keeps it) with Debian's packages;
    skips the calling test where apt or the network is not there."""
    import shutil
    import subprocess

    import pytest
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get: the Linux guest comes from Debian's packages")
    r = subprocess.run([sys.executable, LINUX_FETCH, "-q"], capture_output=True, text=True,
                       timeout=900)
    if r.returncode == 3:
        pytest.skip(f"cannot download the Debian packages: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    if os.path.dirname(LINUX_FETCH) not in sys.path:
        sys.path.insert(0, os.path.dirname(LINUX_FETCH))
    import fetch
    return fetch.default_cache()
