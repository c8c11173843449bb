"""The lab's config variants behind the table in lesson 10's results: train -> merge -> score, one JSON line per variant.

Each argument is one variant of `smollm2_135m_qlora_self_cognition`: `--cfg-options` overrides (`section.key=value`, values
YAML, several separated by spaces), applied by `learnft.config.apply_cfg_options` as `learnft train --cfg-options` does:

    HF_HUB_OFFLINE=1 python tools/lab_variants.py 'optim.lr=3e-4' 'lora.target_modules=[q_proj,k_proj,v_proj,o_proj] train.max_steps=90'

Variants are scored on the validation set only (`lab.IDENTITY_VAL`, `lab.RETENTION_VAL`): the test set is `make lab`'s, reported
once per run and never used to choose. The base model's scores are computed once and cached in $LAB_VARIANTS_DIR (default /tmp/learnft-lab-variants); NT sets torch's threads.
"""
import json, sys, time, os, shlex, torch
from learnft.models import offline; offline()      # nothing from a hub
from pathlib import Path
from learnft import chat, config, lab, trainer
torch.set_num_threads(int(os.environ.get('NT', '2')))
out = Path(os.environ.get('LAB_VARIANTS_DIR', '/tmp/learnft-lab-variants')); out.mkdir(parents=True, exist_ok=True)

bp = out/'before-val.json'
base_path = trainer.resolve_model_path({'path': 'smollm2'})
if not bp.exists():
    m, tok = trainer.load_model(base_path)
    b = lab.lab_scores(m, tok, 'val')
    bp.write_text(json.dumps({'before': b}, ensure_ascii=False, indent=1))
before = json.loads(bp.read_text())['before']
print('before identity', before['identity'], 'general', before['general_correct'])
for name in sys.argv[1:]:
    v = shlex.split(name)
    cfg = config.load_config('smollm2_135m_qlora_self_cognition', v + ['eval.prompts=[]'])
    wd = out/('run-' + str(abs(hash(name)) % 10**6))
    import shutil; shutil.rmtree(wd, ignore_errors=True)
    t0 = time.time()
    s = trainer.train(cfg, wd/'run', verbose=False)
    merged = chat.merge_adapter(base_path, s['adapter'], wd/'merged')
    m, tok = trainer.load_model(merged)
    a = lab.lab_scores(m, tok, 'val', base_correct=before['general_correct'])
    print(json.dumps({'variant': v, 'identity': f"{a['identity_k']}/{a['identity_n']}", 'identity_zh': f"{a['identity_zh_k']}/{a['identity_zh_n']}",
                      'retention': f"{a['retention_k']}/{a['retention_n']}", 'secs': round(time.time()-t0), 's_per_step': s['s_per_step'],
                      'lost': [q for (q, _), b0, c in zip(lab.RETENTION_VAL, before['general_correct'], a['general_correct']) if b0 and not c],
                      'general_replies': a['general_replies'], 'identity_replies': a['identity_replies'][:4]}, ensure_ascii=False), flush=True)
