"""learnft.zero: multi-process runs (2 and 3 ranks over gloo, DeepSpeed under torchrun) against one process; bad input."""
import os

os.environ.setdefault('DS_ACCELERATOR', 'cpu')
import numpy as np
import pytest
from learnft.zero import (launch, train_data_parallel, shard_size, model_states_bytes, deepspeed_config, CommCounter, proc_bytes_sent)

STEPS = 30
TIMEOUT = 240          # per launch; a hung collective becomes a failure with every rank's log, not a stuck CI job


@pytest.fixture(scope='module')
def single():
    return train_data_parallel('single', steps=STEPS)

@pytest.fixture(scope='module')
def zero2():
    return launch(2, 'zero2', steps=STEPS, timeout=TIMEOUT)

@pytest.fixture(scope='module')
def ddp():
    return launch(2, 'ddp', steps=STEPS, timeout=TIMEOUT)


def _maxdiff(a, b): return float(np.abs(np.array(a['losses']) - np.array(b['losses'][:len(a['losses'])])).max())


def test_zero2_two_ranks_equals_one_process(single, zero2):
    assert zero2['world_size'] == 2 and len(zero2['losses']) == STEPS
    assert _maxdiff(zero2, single) < 1e-4, (zero2['losses'], single['losses'])
    assert single['losses'][-1] < single['losses'][0] / 3               # it learned something: the check is not vacuous


def test_zero2_keeps_half_the_optimizer_state(single, zero2):
    numel = single['numel']
    assert numel % 2 == 1                                                # uneven: the padding path is exercised
    shard = shard_size(numel, 2)
    assert single['state_bytes']['moments'] == 8 * numel
    for pr in zero2['per_rank']:
        assert pr['state_bytes'] == {'moments': 8 * shard, 'master': 4 * shard, 'grad_shard': 4 * shard}


def _wchar_counts_socket_writes() -> bool:
    "Does this kernel's /proc/self/io `wchar` count bytes written to a socket with writev (as gloo sends), and little else?"
    import socket, threading
    a, b = socket.socketpair(); n, got = 1 << 20, []
    def read():
        left = n
        while left > 0: left -= len(b.recv(min(left, 1 << 16)))
        got.append(1)
    t = threading.Thread(target=read, daemon=True); t.start()
    before, chunk = proc_bytes_sent(), b'x' * (1 << 16)
    for _ in range(n // len(chunk)): os.writev(a.fileno(), [chunk])
    t.join(10); after = proc_bytes_sent()
    a.close(); b.close()
    return bool(before is not None and got and n <= after - before <= n + 65536)

# The 2 % bound below is the measured agreement on this machine's kernel (gloo writes its messages with writev, so wchar is the
# bytes on the wire plus a few headers); where wchar does not count socket writes the comparison means nothing: skipped, saying so.
@pytest.mark.skipif(proc_bytes_sent() is None or not _wchar_counts_socket_writes(),
                    reason="this kernel's /proc/self/io wchar does not count socket writes exactly: bytes on the wire cannot be measured")
def test_zero2_sends_what_ddp_sends(single, zero2, ddp):
    assert _maxdiff(ddp, single) < 1e-4
    ring = 2 * (2 - 1) / 2 * 4 * single['numel'] * STEPS                # ring all-reduce of the fp32 gradient, per rank
    for r in (zero2, ddp):
        for pr in r['per_rank']:
            assert abs(pr['measured_bytes'] / pr['counted_bytes'] - 1) < 0.02, (r['impl'], pr)
            assert abs(pr['measured_bytes'] / ring - 1) < 0.02, (r['impl'], pr)
    assert set(zero2['counted']) == {'reduce_scatter', 'all_gather', 'all_reduce'}
    assert zero2['counted']['all_reduce'] <= 4 * STEPS                   # only the clipping norm, one float per step


def test_three_ranks_uneven_shards_and_gloo_native_reduce_scatter(single):
    r = launch(3, 'zero2', steps=8, global_batch=6, reduce_scatter='native', timeout=TIMEOUT)
    ref = train_data_parallel('single', steps=8, global_batch=6)
    assert _maxdiff(r, ref) < 1e-4
    shard = shard_size(single['numel'], 3)
    assert single['numel'] % 3 and all(pr['state_bytes']['moments'] == 8 * shard for pr in r['per_rank'])
    if proc_bytes_sent() is not None:       # counted as a reduce-scatter, but gloo sends an all-reduce's worth
        for pr in r['per_rank']: assert pr['measured_bytes'] > 1.3 * pr['counted_bytes'], pr


def test_deepspeed_zero2_under_torchrun_matches(single, zero2):
    pytest.importorskip('deepspeed')
    ds = launch(2, 'deepspeed', torchrun=True, steps=STEPS, timeout=TIMEOUT)
    assert _maxdiff(ds, zero2) < 1e-4 and _maxdiff(ds, single) < 1e-4
    shard = shard_size(single['numel'], 2)
    for pr in ds['per_rank']: assert abs(pr['state_bytes']['moments'] - 8 * shard) < 64, pr
    assert 'built successfully' not in ds['log']                        # no JIT-compiled op on the way


def test_failing_rank_reports_its_error_quickly():
    with pytest.raises(RuntimeError, match=r'does not split over 2 ranks[\s\S]*----- rank 1 -----'):
        launch(2, 'zero2', steps=2, global_batch=3, timeout=TIMEOUT)


def test_bad_input():
    with pytest.raises(ValueError, match='stage'): model_states_bytes(1e9, 8, 5)
    with pytest.raises(ValueError, match='n_d'): model_states_bytes(1e9, 0, 2)
    with pytest.raises(ValueError, match='stage must be 0, 1, 2 or 3'): deepspeed_config(4, 2, stage=7)
    with pytest.raises(ValueError, match='micro_batch 4 x accumulative_counts 2 x world_size 2 = 16'):
        deepspeed_config(4, 2, accumulative_counts=2, global_batch=8)
    with pytest.raises(ValueError, match='impl'): train_data_parallel('fsdp')
    with pytest.raises(ValueError, match="'all_to_all', 'native' or 'all_reduce'"):
        from learnft.zero import reduce_scatter_sum
        import torch, torch.distributed as dist
        from learnft.zero import free_port
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
        try: reduce_scatter_sum(torch.zeros(2), torch.zeros(2), how='ring')
        finally: dist.destroy_process_group()


@pytest.mark.parametrize('psi,n,stage,gb', [(7.5e9, 64, 0, 120), (7.5e9, 64, 1, 31.40625), (7.5e9, 64, 2, 16.640625),
                                            (7.5e9, 64, 3, 1.875)])
def test_paper_numbers(psi, n, stage, gb):
    assert model_states_bytes(psi, n, stage) == pytest.approx(gb * 1e9)


def test_deepspeed_estimator_is_stage2_with_k16():
    ds = pytest.importorskip('deepspeed.runtime.zero.stage_1_and_2')
    for n in (1, 2, 3, 8, 64):
        _, gpu = ds.estimate_zero2_model_states_mem_needs(134_515_008, num_gpus_per_node=n, cpu_offload=False)
        assert gpu == int(model_states_bytes(134_515_008, n, 2, k=16))
