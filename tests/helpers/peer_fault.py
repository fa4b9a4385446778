"""``simo-merge`` with one rank failing mid-training, for tests/jobs/test_multi_process_faults.py.

``python tests/helpers/peer_fault.py RANK ITERATION HOW <simo-merge args>``: on global rank ``RANK`` (the
``RANK`` variable torchrun sets), realignment iteration ``ITERATION`` (1-based) does not run; instead the
process vanishes (``HOW=exit``: ends at once with code 0, as a lost machine would, no message) or raises
a ValueError (``HOW=raise``: the command's one-line error). The other ranks run the command as usual.
"""

from __future__ import annotations

import os
import sys


def main(rank: int, iteration: int, how: str, argv: list[str]) -> int:
    from simo_merge.cli import main as cli_main
    from simo_merge.realign.train import Realignment

    if int(os.environ["RANK"]) == rank:
        run_iteration, done = Realignment.iteration, []

        def failing(self: Realignment, update):  # type: ignore[no-untyped-def]
            done.append(1)
            if len(done) == iteration:
                if how == "exit":
                    sys.stdout.flush()
                    os._exit(0)
                raise ValueError(f"injected failure on rank {rank} at iteration {iteration}")
            return run_iteration(self, update)

        Realignment.iteration = failing  # type: ignore[method-assign]
    return cli_main(argv)


if __name__ == "__main__":
    rank, iteration, how, *argv = sys.argv[1:]
    sys.exit(main(int(rank), int(iteration), how, argv))
