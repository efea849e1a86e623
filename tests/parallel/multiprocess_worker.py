"""One process of a multi-process job: ``python multiprocess_worker.py ID N PORT WORKDIR STOP``.

Joins ``N`` processes on ``127.0.0.1:PORT`` with ``jax.distributed.initialize`` (each process
has the devices ``XLA_FLAGS`` gives it), then runs the real training loop on its shard of the
synthetic images. The LAST process sends itself SIGTERM while step ``STOP`` runs (0 = never);
the others get no signal, so the run only stops cleanly if the processes agree. Prints the
summary as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from flowjax.parallel import multihost  # noqa: E402


def main():
    pid, nprocs, port, workdir, stop = sys.argv[1:6]
    pid, nprocs, stop = int(pid), int(nprocs), int(stop)
    multihost.initialize(f"127.0.0.1:{port}", nprocs, pid)

    import jax

    from flowjax.training import train_and_evaluate
    from tests.parallel.synthetic import SyntheticImages, tiny_dit_config

    config = tiny_dit_config(preemption_check_every=4, checkpoint_every=0)
    data = SyntheticImages(
        config.train.batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()
    )
    inner = data.iterator

    def iterator(start_step=0):
        for step, batch in enumerate(inner(start_step), start_step):
            if stop and pid == nprocs - 1 and step == stop - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    data.iterator = iterator
    summary = train_and_evaluate(config, workdir, data=data)
    print(json.dumps({"process": pid, "devices": jax.device_count(), **summary}, default=str))


if __name__ == "__main__":
    main()
