"""Where the tolerance of tests/test_cli.py::test_loop_equals_transformers_trainer comes from: our loop (train.num_threads = 1)
against transformers' Trainer run at each given thread count, on the test's tiny QLoRA config; prints max |adapter difference|,
max relative loss difference, and our loop against itself (run twice).

    python tools/loop_vs_trainer_spread.py 1,2        # Trainer at 1 and at 2 threads
"""
import sys, os, json
from pathlib import Path
sys.path[:0] = [str(Path(__file__).resolve().parents[1]/'tests')]
for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE'): os.environ.setdefault(k, '1')
import torch
import test_cli as T
import tempfile
from learnft import lab
from transformers import Trainer, TrainingArguments
from peft import get_peft_model_state_dict

def run(threads, tmp):
    tmp = Path(tmp)
    cfg = {**T.DS_CFG, 'train': {**T.DS_CFG['train'], 'batch_size': 2, 'accumulative_counts': 1, 'max_steps': 5}}
    c = lab.validate_config(cfg)
    lab.train(cfg, tmp/'ours', verbose=False)
    lab.train(cfg, tmp/'ours2', verbose=False)
    a1, a2 = T._adapter(tmp/'ours'), T._adapter(tmp/'ours2')
    self_diff = max((a1[k] - a2[k]).abs().max().item() for k in a1)
    torch.set_num_threads(threads)
    model, tok = lab.load_model(tmp/'ours'/'base', bits=4)
    rows = lab.build_dataset(c, tok, verbose=False)
    torch.manual_seed(c['train']['seed']); model = lab.add_lora(model, c['lora'])
    steps, bs = c['train']['max_steps'], c['train']['batch_size']
    batches = [lab.collate([rows[i] for i in lab.batch_indices(len(rows), s, bs, 1, c['train']['seed'])[0]], tok.eos_token_id) for s in range(steps)]
    seen = []
    class FixedOrder(Trainer):
        def get_train_dataloader(self): return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch); seen.append(loss.item()); return loss
    o = c['optim']
    args = TrainingArguments(output_dir=str(tmp/'hf'), per_device_train_batch_size=bs, gradient_accumulation_steps=1, max_steps=steps,
                             learning_rate=o['lr'], lr_scheduler_type=o['scheduler'], warmup_steps=int(o['warmup_ratio'] * steps),
                             weight_decay=o['weight_decay'], adam_beta1=o['betas'][0], adam_beta2=o['betas'][1], max_grad_norm=o['max_norm'],
                             optim='adamw_torch', logging_steps=1, save_strategy='no', report_to=[], use_cpu=True, seed=0,
                             remove_unused_columns=False, disable_tqdm=True)
    FixedOrder(model=model, args=args, train_dataset=rows).train()
    ours = T._losses(tmp/'ours')
    theirs, oa = get_peft_model_state_dict(model), T._adapter(tmp/'ours')
    d = {k: (theirs[k] - oa[k]).abs().max().item() for k in oa}
    rel = max(abs(a - b) / abs(b) for a, b in zip(seen, ours))
    return {'trainer_threads': threads, 'ours_vs_ours': self_diff, 'max_loss_rel': rel, 'max_adapter_abs': max(d.values()), 'worst': max(d, key=d.get),
            'adapter_scale': max(v.abs().max().item() for v in oa.values())}

if __name__ == '__main__':
    from learnft.quant import cpu_features
    print(json.dumps(cpu_features()))
    for th in [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else '1,2').split(',')]:
        with tempfile.TemporaryDirectory() as t: print(json.dumps(run(th, t)), flush=True)
