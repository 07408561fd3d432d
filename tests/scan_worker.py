"""`dmft scan` in a fresh process, for tests/test_scan.py (forced host devices, jax.distributed, SIGKILL).

    python tests/scan_worker.py [--pause-after K] ARGS...     # ARGS as for `dmft scan`

With --pause-after K the scan writes K chunks, then begins the next chunk's temporary
file, prints PAUSED and waits there, to be killed.
"""

import os
import sys
import time


def _pause_after(k: int) -> None:
    from experiments.store import Store

    write = Store.write_chunk
    written = [0]

    def write_chunk(self, name, arrays, **kw):
        if written[0] == k:      # die mid-write: a half-written temporary file stays behind
            with open(f"{self.chunk_path(name)}.tmp-{os.getpid()}", "wb") as fh:
                fh.write(b"partial")
            print("PAUSED", flush=True)
            while True:
                time.sleep(60)
        write(self, name, arrays, **kw)
        written[0] += 1

    Store.write_chunk = write_chunk


def main(argv) -> int:
    if argv[:1] == ["--pause-after"]:
        _pause_after(int(argv[1]))
        argv = argv[2:]
    from experiments import cli

    return cli.main(["scan"] + argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
