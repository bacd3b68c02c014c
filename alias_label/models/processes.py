"""Work split over the processes of ``accelerate launch``, in whole chunks, and gathered back in order.

Each process takes a contiguous run of whole chunks (texts to encode, queries to look up): the
very chunks one process would make on its own, so the gathered result equals a one-process run's
on the same hardware. Run without a launcher, a script is process 0 of 1 and nothing changes.

    accelerate launch --num_processes 4 scripts/build_index.py --model teacher         # 4 GPUs
    accelerate launch --num_machines 2 --machine_rank 0 --main_process_ip HOST \\
        --num_processes 16 scripts/build_index.py --model teacher                       # 2 nodes
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from alias_label.errors import UserError


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: str  # where this process runs: each on its own GPU, since "cuda" alone is the first one

    @classmethod
    @contextlib.contextmanager
    def launched(cls, device: str):
        """This process's place among those ``accelerate launch`` started (or 0 of 1), for a block.

        Processes meant for ``device`` "cpu" talk over gloo, else over NCCL. The process group is
        closed on the way out, by all processes at once after a block that ends normally: a process
        that exits with it open, or closes it while others still use it, can abort in its teardown.
        """
        from accelerate import PartialState

        state = PartialState(cpu=not str(device).startswith("cuda"))
        own = f"cuda:{state.local_process_index}" if device == "cuda" and state.num_processes > 1 else device
        try:
            yield cls(state.process_index, state.num_processes, own)
            # The processes close the group together: one that closes it while another still works
            # over it (the main process calibrating, say) can abort in gloo's teardown.
            if state.num_processes > 1:
                state.wait_for_everyone()
        finally:
            state.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n_rows: int, chunk_rows: int, rank: int | None = None) -> tuple[int, int]:
        """[start, end) of the rows this process (or process ``rank``) owns: whole chunks, contiguous, in rank order."""
        chunks = -(-n_rows // chunk_rows)
        per_process = -(-chunks // self.world)
        start = min(n_rows, (self.rank if rank is None else rank) * per_process * chunk_rows)
        return start, min(n_rows, start + per_process * chunk_rows)

    def share(self, items: list) -> list:
        """This process's part of ``items``: contiguous, in rank order, as even as can be."""
        per_process = -(-len(items) // self.world)
        return items[self.rank * per_process:(self.rank + 1) * per_process]

    def barrier(self) -> None:
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def gather(self, part) -> list | None:
        """Every process's ``part``, in rank order, on the main process (None on the others)."""
        if self.world == 1:
            return [part]
        from accelerate.utils import gather_object

        parts = gather_object([part])
        return parts if self.is_main else None


def require_one_process(script: str) -> None:
    """Refuse a launch of several processes for a script that runs in one: each process would train
    and evaluate alone, and write the same files as the others at the same time."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise UserError(f"{script} runs in one process, and {world} were launched: run it with python, not "
                        "accelerate launch or torchrun (scripts/train_alias_label.py, scripts/build_index.py and "
                        "scripts/test_lookup.py --batch take several)")
