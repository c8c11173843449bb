"""GPU: LoRA's `dropout(x) @ A.T`, forward and backward — learnft's fused Triton kernels (`learnft.speed.lora_dropout_ops`,
`train.kernels: ...+lora`) against what peft runs (`nn.Dropout` then `nn.Linear`, eager and under `torch.compile`).

First it checks the fused op on this GPU against the reference built from the very mask its kernels draw
(`learnft.speed.lora_dropout_check`): the forward and both gradients, in float32 and bf16, with the largest differences printed.
Then it times one LoRA-A of each input width of the 1B and 7B shapes (rank 64, 16 x 2,048 and 4 x 2,048 tokens) for each
side, forward + backward, with CUDA events: launched back to back as a training step launches them (the host's time per
launch included), and replayed from a CUDA graph (the device's own time); and the memory each side holds beyond its inputs.

    python benchmarks/bench_lora_dropout_gpu.py [--iters 30] [--json out.json]
"""
import argparse, json
from pathlib import Path
import torch
from learnft.speed import lora_dropout_ops, lora_dropout_check
from qlora_gpu import cuda_time            # (beside this script)

cuda_ms = lambda fn, iters: cuda_time(fn, iters) * 1e3


def timing(ops, T, K, R, p, iters):
    x = torch.randn(T, K, device='cuda', dtype=torch.bfloat16, requires_grad=True)
    a = (torch.randn(R, K, device='cuda', dtype=torch.bfloat16) / K ** 0.5).requires_grad_()
    gh = torch.randn(T, R, device='cuda', dtype=torch.bfloat16)
    drop = torch.nn.Dropout(p)
    def peft_like(x, a): return torch.nn.functional.linear(drop(x), a)
    compiled = torch.compile(peft_like)
    def fused(x, a): return ops['op'](x, a, torch.randint(2 ** 62, (1,), device='cuda'), p)
    out = {}
    for name, f in (('peft (eager)', peft_like), ('peft (torch.compile)', compiled), ('learnft fused', fused)):
        def step(): x.grad = a.grad = None; f(x, a).backward(gh)
        torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
        ms = cuda_ms(step, iters)
        out[name] = dict(ms=ms, extra_gib=(torch.cuda.max_memory_allocated() - base) / 2 ** 30)
        try:    # the device's own time: the same call replayed from a CUDA graph, without the host's launch overhead between kernels
            side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3): step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph): step()
            out[name]['graph_ms'] = cuda_ms(graph.replay, iters)
        except Exception as e: out[name]['graph_ms'] = None; print(f'  ({name}: no CUDA graph: {type(e).__name__}: {str(e)[:120]})')
    return out


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--iters', type=int, default=30); ap.add_argument('--json', default=None)
    a = ap.parse_args()
    assert torch.cuda.is_available(), 'this benchmark needs a CUDA GPU'
    import triton
    ops = lora_dropout_ops()
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}')
    res = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'triton': triton.__version__, 'checks': [], 'timings': []}
    print('\n# the fused op against torch on the kernels own mask (largest difference / largest value)')
    for T, K, R, p, dt in ((1000, 8200, 12, 0.3, torch.float32), (32768, 2048, 64, 0.1, torch.bfloat16),
                           (8192, 11008, 64, 0.1, torch.bfloat16)):
        c = lora_dropout_check(T, K, R, p, dt, 'cuda', seed=T + K); res['checks'].append(c)
        print(f"T {T:>6} K {K:>5} r {R:>3} p {p}  {c['dtype']:<9} kept {c['kept']:.4f}  h {c['h']:.2e}  dx {c['dx']:.2e}  dA {c['da']:.2e}")
        tol = 1e-5 if dt == torch.float32 else 1e-2   # bf16: h and dx are rounded to bf16 (2^-8 relative)
        assert max(c['h'], c['dx'], c['da']) < tol and abs(c['kept'] - (1 - p)) < 0.01, c
    print('\n# dropout(x) @ A.T, forward + backward, bf16, rank 64, p 0.1 (ms per call; extra GiB: the peak above the inputs)')
    print(f"{'T x K':<14}{'peft eager':>12}{'peft compiled':>15}{'learnft fused':>15}{'vs eager':>10}{'vs compiled':>13}   extra GiB")
    for T, K in ((32768, 2048), (32768, 5632), (8192, 4096), (8192, 11008)):
        t = timing(ops, T, K, 64, 0.1, a.iters); res['timings'].append(dict(T=T, K=K, **t))
        for clock in ('ms', 'graph_ms'):
            e, c, f = (t[k][clock] for k in ('peft (eager)', 'peft (torch.compile)', 'learnft fused'))
            if None in (e, c, f): continue
            print(f"{f'{T} x {K}':<14}{e:>12.3f}{c:>15.3f}{f:>15.3f}{e / f:>9.2f}x{c / f:>12.2f}x   " + (
                  ' / '.join(f"{t[k]['extra_gib']:.2f}" for k in t) if clock == 'ms' else '(replayed from a CUDA graph)'))
    res['tiles'] = {name: {str(key): str(cfg) for key, cfg in kern.cache.items()} for name, kern in ops['tuned'].items()}
    print('\n# the tiles each kernel chose (autotuned per input width and rank, dtypes):')
    for name, chosen in res['tiles'].items(): print(f'{name:<4}', chosen)
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
