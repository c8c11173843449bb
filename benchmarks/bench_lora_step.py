"""Forward+backward step of SmolLM2-135M-Instruct with LoRA: learnft.lora against peft, same config, same weights.

Prints step times (interleaved runs, median and best; CPU time of this process and wall time) and the memory each keeps:
trainable parameters, gradients, AdamW state and the activations autograd saves for the backward pass, side by side,
as ratios ours/peft. On a shared machine wall time is mostly other people's load: read the CPU-time rows (one thread by
default, so CPU time is the work done).

    .venv/bin/python benchmarks/bench_lora_step.py [--r 8] [--alpha 16] [--targets all-linear] [--batch 2] [--seq 64] [--reps 7] [--threads 1]
"""
import argparse, copy, os, platform, statistics, time, warnings
from learnft.models import offline; offline()      # nothing from a hub
warnings.filterwarnings('ignore')
import torch
import peft
from peft import LoraConfig, get_peft_model
from learnft.models import load_smollm2
from learnft.lora import inject_lora, lora_layers

MiB = 2**20

def step(model, ids):
    "One training step's compute: forward with the LM loss, backward, gradients cleared."
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)

def memory(model, ids) -> dict:
    "Bytes kept by training: trainable params, their grads, AdamW state (measured), saved activations (non-parameter tensors)."
    params = [p for p in model.parameters() if p.requires_grad]
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}
    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs: saved[ptr] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    opt = torch.optim.AdamW(params, lr=0.0); opt.step()
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    model.zero_grad(set_to_none=True); del opt
    return {'trainable params (MiB)': sum(p.numel() * p.element_size() for p in params) / MiB, 'gradients (MiB)': grads / MiB,
            'AdamW state (MiB)': state / MiB, 'saved activations (MiB)': sum(saved.values()) / MiB}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--r', type=int, default=8); ap.add_argument('--alpha', type=float, default=16)
    ap.add_argument('--targets', default='all-linear'); ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--seq', type=int, default=64); ap.add_argument('--reps', type=int, default=7)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    targets = a.targets if a.targets == 'all-linear' else a.targets.split(',')
    base, _ = load_smollm2()
    ours = inject_lora(copy.deepcopy(base), targets, r=a.r, alpha=a.alpha)
    with torch.no_grad():
        for l in lora_layers(ours).values(): l.lora_B.weight.normal_(std=0.01)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=targets))
    theirs.load_state_dict({f'base_model.model.{n}.{ab}.default.weight': getattr(l, ab).weight
                            for n, l in lora_layers(ours).items() for ab in ('lora_A', 'lora_B')}, strict=False)
    del base
    ours.train(); theirs.train()
    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (a.batch, a.seq))
    with torch.no_grad(): assert torch.allclose(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, atol=1e-4)
    models = {'learnft': ours, 'peft': theirs}
    for m in models.values(): step(m, ids)   # warm-up
    wall, cpu = {k: [] for k in models}, {k: [] for k in models}
    for rep in range(a.reps):                  # interleaved, alternating who goes first, so load on the machine hits both
        for k in (list(models) if rep % 2 == 0 else list(models)[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            step(models[k], ids)
            wall[k].append(time.perf_counter() - t0); cpu[k].append(time.process_time() - c0)
    mem = {k: memory(m, ids) for k, m in models.items()}

    print(f"LoRA r={a.r} alpha={a.alpha:g} targets={a.targets}; SmolLM2-135M-Instruct fp32; batch {a.batch} x seq {a.seq}; "
          f"{a.reps} interleaved reps")
    print(f"torch {torch.__version__}, peft {peft.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}\n")
    print(f"| {'':<28} | {'learnft':>10} | {'peft':>10} | {'ours/peft':>9} |")
    print(f"|{'-'*30}|{'-'*12}|{'-'*12}|{'-'*11}|")
    med, best = statistics.median, min
    rows = [(f'step CPU time, {f.__name__} (s)', f(cpu['learnft']), f(cpu['peft'])) for f in (med, best)]
    rows += [(f'step wall time, {f.__name__} (s)', f(wall['learnft']), f(wall['peft'])) for f in (med, best)]
    rows += [(k, mem['learnft'][k], mem['peft'][k]) for k in mem['learnft']]
    for name, o, p in rows: print(f"| {name:<28} | {o:>10.3f} | {p:>10.3f} | {o/p:>9.3f} |")
    return rows

if __name__ == '__main__': main()
