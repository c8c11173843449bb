"""`train.kernels`: the config switch for fused kernels (trainer.apply_kernels). The GPU speed it buys is measured by
benchmarks/bench_mfu_gpu.py (results in benchmarks/results/bench_mfu_gpu_h200.txt); here, on the CPU: a compiled run trains
exactly like the eager one, and the options that cannot run here say why."""
import copy, sys

import pytest
import torch

from learnft import config, trainer

BASE = dict(model=dict(path='tiny'), template='smollm2',
            data=dict(builder='self_cognition', builder_args=dict(repeats=1), max_length=64, pack_to_max_length=True),
            lora=dict(lora_dropout=0.0), optim=dict(lr=1e-3), train=dict(max_steps=3, save_steps=100, batch_size=2), eval=dict(prompts=[]))


def test_unknown_kernels_value_names_the_key():
    cfg = copy.deepcopy(BASE); cfg['train']['kernels'] = 'triton'
    with pytest.raises(config.ConfigError, match=r"train\.kernels.*triton"):
        config.validate_config(cfg)


def test_liger_off_a_gpu_says_why(tmp_path):
    cfg = copy.deepcopy(BASE); cfg['train']['kernels'] = 'liger'
    with pytest.raises(config.ConfigError, match=r"train\.kernels.*GPU.*cpu"):
        trainer.train(cfg, tmp_path/'run', verbose=False)


def test_compile_without_decoder_layers_says_so():
    with pytest.raises(config.ConfigError, match="no decoder layers"):
        trainer.apply_kernels(torch.nn.Linear(2, 2), 'compile', 'cpu')


@pytest.mark.skipif(sys.platform != 'linux', reason='inductor needs a C++ compiler')
def test_compiled_layers_train_like_eager(tmp_path):
    "Regional torch.compile changes the kernels, not the maths: the same losses, step for step (fp32, no dropout)."
    losses = {}
    for k in (None, 'compile'):
        cfg = copy.deepcopy(BASE); cfg['train']['kernels'] = k
        trainer.train(cfg, tmp_path/str(k), verbose=False)
        losses[k] = [r['loss'] for r in trainer.read_log(tmp_path/str(k))]
    assert len(losses[None]) == 3
    # measured: identical to the 6 decimals the log keeps (inductor's fp32 fusions reorder no reduction here)
    assert losses['compile'] == pytest.approx(losses[None], abs=1e-5)


def test_prefetch_builds_the_same_batches(tmp_path):
    "train.prefetch builds the next step's batches in a thread: the trainer's own collate of the tiny config's rows, tensor for tensor."
    import contextlib, io
    from learnft.models import load_smollm2_tokenizer
    cfg = config.load_config(copy.deepcopy(BASE))
    with contextlib.redirect_stdout(io.StringIO()): rows = trainer.build_dataset(cfg, load_smollm2_tokenizer())
    def build(step):
        micro = trainer.batch_indices(len(rows), step, 2, 2, 0)
        return micro, [trainer.collate([rows[i] for i in idx], 0, varlen=step % 2 == 1) for idx in micro]
    plain, ahead = (list(trainer.step_batches(build, range(5), p)) for p in (False, True))
    assert [(s, m) for s, m, _ in plain] == [(s, m) for s, m, _ in ahead] and len(plain) == 5
    for (_, _, a), (_, _, b) in zip(plain, ahead):
        assert all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x) for x, y in zip(a, b))


def test_cpu_runs_build_batches_in_the_loop(tmp_path, monkeypatch):
    "On a CPU the prefetch thread would only compete for the cores (measured: the lab's steps 1.2x as long), so train asks for none."
    seen, real = [], trainer.step_batches
    def spy(build, steps, prefetch=True, pin=False):
        seen.append((prefetch, pin)); return real(build, steps, prefetch, pin)
    monkeypatch.setattr(trainer, 'step_batches', spy)
    cfg = copy.deepcopy(BASE); cfg['train']['max_steps'] = 1
    trainer.train(cfg, tmp_path/'run', verbose=False)
    assert seen == [(False, False)]


def test_step_batches_order_and_early_stop():
    built = []
    def build(s): built.append(s); return [s], [{'x': torch.tensor([s])}]
    for pf in (False, True):
        built.clear()
        got = [(s, m, b[0]['x'].item()) for s, m, b in trainer.step_batches(build, range(2, 6), pf)]
        assert got == [(s, [s], s) for s in range(2, 6)] and built == [2, 3, 4, 5]
    built.clear()
    gen = trainer.step_batches(build, range(10), True)
    assert next(gen)[0] == 0 and next(gen)[0] == 1
    gen.close()                                   # a run that stops early (stop_at, a diverged step) builds at most one step ahead
    assert built == [0, 1, 2]
    assert list(trainer.step_batches(build, range(0), True)) == []
