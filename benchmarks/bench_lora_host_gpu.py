"""GPU: the host's time per call of learnft's fused LoRA-A (`learnft.speed.lora_dropout_ops`, `train.kernels: ...+lora`)
against what peft runs (`nn.Dropout` then `nn.Linear`), and where the fused op's host time goes.

On a few tokens the device's work is a few microseconds, so a call's wall time is the host's: each side runs forward +
backward of `dropout(x) @ A.T` (rank 64, p 0.1) `--calls` times with one synchronisation at the end. Then the pieces of the
fused op, each alone: `torch.randint` for the seed (as the fused layer draws one per call), one Triton kernel launched
through its autotuner and the same kernel launched with the autotuner's chosen config passed directly, an empty custom op of
the same signature and backward (the dispatch and autograd alone, no launch), and a cProfile of the fused calls (the
functions with the most own time). The 1B shape has 22 x 7 LoRA layers: the last line scales the per-call gap to a step.

    python benchmarks/bench_lora_host_gpu.py [--calls 2000] [--json out.json]
    TRITON_INTERPRET=1 python benchmarks/bench_lora_host_gpu.py --calls 2 --profile-calls 2 --tokens 8   # no GPU: tries the script under Triton's interpreter
"""
import argparse, cProfile, json, pstats, time
from pathlib import Path
import torch
from learnft.speed import lora_dropout_ops, dropout_threshold
from bench_mfu_gpu import short_func     # (beside this script)


DEV = 'cuda' if torch.cuda.is_available() else 'cpu'
sync = torch.cuda.synchronize if DEV == 'cuda' else (lambda: None)


def per_call_us(fn, calls: int) -> float:
    for _ in range(min(20, calls)): fn()
    sync(); t = time.perf_counter()
    for _ in range(calls): fn()
    sync()
    return (time.perf_counter() - t) / calls * 1e6


def empty_op():
    "A custom op with the fused op's signature and a backward of two more custom ops, none of which launches anything."
    @torch.library.custom_op('learnft_bench::empty_a', mutates_args=())
    def op(x: torch.Tensor, a: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor: return x.new_empty(x.shape[0], a.shape[0])
    op.register_fake(lambda x, a, seed, p: x.new_empty(x.shape[0], a.shape[0]))
    @torch.library.custom_op('learnft_bench::empty_dx', mutates_args=())
    def op_dx(g: torch.Tensor, a: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor: return g.new_empty(g.shape[0], a.shape[1])
    op_dx.register_fake(lambda g, a, seed, p: g.new_empty(g.shape[0], a.shape[1]))
    @torch.library.custom_op('learnft_bench::empty_da', mutates_args=())
    def op_da(g: torch.Tensor, x: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor: return g.new_empty(g.shape[1], x.shape[1])
    op_da.register_fake(lambda g, x, seed, p: g.new_empty(g.shape[1], x.shape[1]))
    def setup_context(ctx, inputs, output): x, a, seed, ctx.p = inputs; ctx.save_for_backward(x, a, seed)
    def backward(ctx, gh):
        x, a, seed = ctx.saved_tensors
        return op_dx(gh, a, seed, ctx.p), op_da(gh, x, seed, ctx.p).to(a.dtype), None, None
    op.register_autograd(backward, setup_context=setup_context)
    return op


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--calls', type=int, default=2000); ap.add_argument('--tokens', type=int, default=64)
    ap.add_argument('--profile-calls', type=int, default=300)
    ap.add_argument('--json', default=None); a = ap.parse_args()
    import triton
    ops = lora_dropout_ops(); T, K, R, p = a.tokens, 2048, 64, 0.1
    x = torch.randn(T, K, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    A = (torch.randn(R, K, device=DEV, dtype=torch.bfloat16) / K ** 0.5).requires_grad_()
    gh = torch.randn(T, R, device=DEV, dtype=torch.bfloat16)
    drop = torch.nn.Dropout(p); seed = torch.randint(2 ** 62, (1,), device=DEV)
    def peft_like(): x.grad = A.grad = None; torch.nn.functional.linear(drop(x), A).backward(gh)
    def fused(): x.grad = A.grad = None; ops['op'](x, A, torch.randint(2 ** 62, (1,), device=DEV), p).backward(gh)
    def fused_fwd(): ops['op'](x.detach(), A.detach(), seed, p)
    empty = empty_op()
    def empty_call(): x.grad = A.grad = None; empty(x, A, seed, p).backward(gh)
    thr, scale = dropout_threshold(p); h = torch.empty(T, R, device=DEV, dtype=torch.bfloat16)
    rp = max(16, triton.next_power_of_2(R)); xd, ad = x.detach(), A.detach()
    tuned = ops['tuned']['fwd']
    args = (xd, ad, h, seed, T, K, R, thr, scale, xd.stride(0), ad.stride(0), h.stride(0))
    def fwd_autotuned(): tuned[lambda m: (triton.cdiv(T, m['BM']),)](*args, RP=rp, PREC='tf32')
    fwd_autotuned(); sync()
    best = tuned.best_config
    def fwd_direct(): tuned.fn[(triton.cdiv(T, best.kwargs['BM']),)](*args, RP=rp, PREC='tf32', **best.all_kwargs())
    def seed_only(): torch.randint(2 ** 62, (1,), device=DEV)
    rows = [('peft: dropout + linear, forward + backward', peft_like), ('learnft fused, forward + backward (a seed per call)', fused),
            ('learnft fused, forward only', fused_fwd), ('an empty custom op of the same signature, forward + backward', empty_call),
            ('torch.randint for the seed', seed_only), ('the forward kernel through its autotuner', fwd_autotuned),
            ('the forward kernel, its config passed directly', fwd_direct)]
    name = torch.cuda.get_device_name() if DEV == 'cuda' else 'CPU (Triton interpreter)'
    print(f'{name}  torch {torch.__version__}  triton {triton.__version__}   {T} tokens x {K}, rank {R}, p {p}')
    res = {'device': name, 'torch': torch.__version__, 'triton': triton.__version__, 'T': T, 'K': K, 'R': R,
           'calls': a.calls, 'us': {}}
    for what, fn in rows:
        res['us'][what] = us = per_call_us(fn, a.calls)
        print(f'{us:9.1f} us per call   {what}')
    gap = res['us'][rows[1][0]] - res['us'][rows[0][0]]
    print(f'\nthe fused op costs the host {gap:.0f} us more per LoRA layer than peft: {gap * 22 * 7 / 1e3:.1f} ms per step of the 1B shape (22 x 7 layers)')
    prof = cProfile.Profile(); prof.enable()
    n = a.profile_calls
    for _ in range(n): fused()
    sync(); prof.disable()
    st = pstats.Stats(prof); total = st.total_tt
    top = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:18]      # by own time
    res['profile'] = [dict(func=short_func(k), calls=v[1] // n, own_us=v[2] / n * 1e6, cum_us=v[3] / n * 1e6) for k, v in top]
    print(f'\n# cProfile of {n} fused forward + backward calls: {total / n * 1e6:.0f} us per call under the profiler; own and cumulative time per call')
    for r in res['profile']: print(f"{r['own_us']:8.1f} {r['cum_us']:8.1f}  x{r['calls']:<3} {r['func']}")
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + '\n')
