"""Where the tolerance of tests/test_cli.py::test_loop_equals_transformers_trainer comes from: our loop (train.num_threads = 1)
against transformers' Trainer run at each given thread count (the test's own `trainer_run`), on the test's tiny QLoRA config;
prints max |adapter difference|, max relative loss difference, and our loop against itself (run twice).

    python tools/loop_vs_trainer_spread.py 1,2        # Trainer at 1 and at 2 threads
"""
import json, os, sys, tempfile
from pathlib import Path
sys.path[:0] = [str(Path(__file__).resolve().parents[1]/'tests')]
from learnft.models import offline; offline()      # nothing from a hub
import test_cli as T
from learnft import trainer
from learnft.quant import cpu_features

def spread(threads: int, work_dir: Path) -> dict:
    trainer.train(T.TRAINER_CFG, work_dir/'ours', verbose=False)
    trainer.train(T.TRAINER_CFG, work_dir/'again', verbose=False)
    ours, again = T._adapter(work_dir/'ours'), T._adapter(work_dir/'again')
    seen, theirs = T.trainer_run(work_dir, threads)
    d = {k: (theirs[k] - ours[k]).abs().max().item() for k in ours}
    return {'trainer_threads': threads, 'ours_vs_ours': max((ours[k] - again[k]).abs().max().item() for k in ours),
            'max_loss_rel': max(abs(a - b) / abs(b) for a, b in zip(seen, T._losses(work_dir/'ours'))),
            'max_adapter_abs': max(d.values()), 'worst': max(d, key=d.get)}

if __name__ == '__main__':
    print(json.dumps(cpu_features()))
    for th in [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else '1,2').split(',')]:
        with tempfile.TemporaryDirectory() as t: print(json.dumps(spread(th, Path(t))), flush=True)
