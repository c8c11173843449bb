"""The graders of `learnft.exercises` can fail: each one is fed a typical wrong answer and must name the mistake.

The solutions themselves run in the lessons (folded cells after each exercise), which `nbdev_test` executes in CI."""
import math
import re

import pytest
import torch

from learnft import exercises as ex
from learnft.exercises import ExerciseFailed, check


def _wrong_params(config):            # counts the tied head twice
    h, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    hd = config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    return 2 * V * h + L * (2 * h * q + 2 * h * kv + 3 * h * config.intermediate_size + 2 * h) + h

def _agent_without_results(generate, question, registry, max_steps=4):
    messages = [{'role': 'user', 'content': question}]
    for _ in range(max_steps):
        text = generate(messages)
        if '<tool_call>' not in text: return text
        messages.append({'role': 'assistant', 'content': text})      # forgets to run the tool
    return None

def _set_in_place(cfg, option):                        # writes into the caller's dict
    key, _, value = option.partition('=')
    if '=' not in option: raise ValueError(option)
    *secs, last = key.split('.'); node = cfg
    for s in secs: node = node.setdefault(s, {})
    node[last] = __import__('yaml').safe_load(value)
    return cfg

def _write_in_place(final_dir, write):                 # no temporary folder: a crash leaves final_dir half-written
    from pathlib import Path
    Path(final_dir).mkdir(parents=True, exist_ok=True); write(Path(final_dir)); return Path(final_dir)

def _q8_0_round_half_even(row):                        # np.round: halves to even, where ggml rounds them away from zero
    import numpy as np
    b = row.astype(np.float32).reshape(-1, 32); d = np.abs(b).max(1, keepdims=True) / 127
    q = np.round(b * np.where(d == 0, 0, 1 / np.where(d == 0, 1, d))).astype(np.int8)
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], 1).tobytes()

WRONG = {
    ('00', 1): (_wrong_params, 'count it once'),
    ('00', 2): (lambda w, blocksize=32: torch.full((w.numel() // blocksize,), blocksize), 'distinct values, you counted 32'),
    ('00', 3): (lambda model, ids, n, eos: model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n,
                                                          pad_token_id=0)[0, len(ids):].tolist(), 'EOS'),
    ('01', 1): (lambda msgs, add_generation_prompt=False: ''.join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs),
                'differ at character 12'),
    ('01', 2): (lambda: ('smollm2', None), 'choose one of'),
    ('01', 3): (lambda text, stops: text.split(stops[0])[0] if stops else text, 'stop words'),
    ('02', 1): (lambda row: [{'role': 'user', 'content': row['instruction'] + '\n' + row['input']},
                             {'role': 'assistant', 'content': row['output']}], 'row 0'),
    ('02', 2): (lambda row: [{'role': {'human': 'user', 'gpt': 'assistant'}.get(t['from'], t['from']), 'content': t['value']}
                             for t in row['conversations']], "robot"),
    ('02', 3): (lambda row: 'alpaca' if 'instruction' in row else 'pretrain', 'result should be'),
    ('03', 1): (lambda example, tok, L: __import__('learnft.encode', fromlist=['encode']).encode(example, tok, L + 1), 'max_length=12'),
    ('03', 2): (lambda logits, labels: torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                                         ignore_index=-100), 'the loss differs'),
    ('03', 3): (lambda example, tok, L: __import__('learnft.encode', fromlist=['encode']).encode(example, tok, L)['labels'], 'labels is wrong'),
    ('04', 1): (lambda lens, L: [[i] for i in range(len(lens))], 'bins, you made'),
    ('04', 2): (lambda seq_lens, length: list(range(length)), 'position ids is wrong'),
    ('04', 3): (lambda seq_lens, length: torch.ones(length, length, dtype=torch.bool).tril(), 'may not attend'),
    ('05', 1): (lambda x, W0, b, A, B, alpha, r: x @ W0.T + (0 if b is None else b) + alpha * (x @ A.T) @ B.T, 'h differs'),
    ('05', 2): (lambda alpha, r: alpha / r, "plain LoRA's alpha/r"),
    ('05', 3): (lambda W0, A, B, scaling: W0 + B @ A, 'against the unmerged layer'),
    ('06', 1): (lambda x, cb, bs: (torch.zeros(x.numel(), dtype=torch.long), x.reshape(-1, bs).abs().amax(1)), 'should be code'),
    ('06', 2): (lambda codes: ((codes[1::2] << 4) | codes[0::2]).to(torch.uint8), 'the bytes is wrong'),
    ('06', 3): (lambda x, bs: x.reshape(-1, bs).div(x.reshape(-1, bs).abs().amax(1, keepdim=True)).mul(7).round().div(7)
                .mul(x.reshape(-1, bs).abs().amax(1, keepdim=True)).reshape(x.shape), 'minimum to its maximum'),
    ('06', 4): (lambda bs, dq, nbs=256: 4 + 32 / bs, 'double_quant=True'),
    ('07', 1): (lambda x, layer: layer.base_layer(x), 'the output differs'),
    ('07', 2): (lambda n, nl, nlora: n * 0.5 + 16 * nlora, 'GiB'),
    ('07', 3): (lambda model: [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)], 'lengths differ'),
    ('08', 1): (lambda psi, n_d, stage, k=12: 16 * psi / n_d, 'stage 0'),
    ('08', 2): (lambda numel, world, rank: (rank * numel // world, (rank + 1) * numel // world), '(start, stop)'),
    ('08', 3): (lambda psi, n_d, gb=2, pb=2: 2 * psi * gb, 'reduce-scatter'),
    ('08b', 1): (lambda c: c['num_hidden_layers'] * (4 * c['hidden_size'] ** 2 + 3 * c['hidden_size'] * c['intermediate_size']),
                 'hidden 4096, 32 layers'),     # k and v as wide as q (no grouped-query attention), and no LM head
    ('08b', 2): (lambda tps, nf, nt, rc, peak: (tps * (4 * nf + 6 * nt) / peak,) * 2, 'recompute=True'),   # HFU without the recompute
    ('08b', 3): (lambda q, L, lens: 12 * q * L * sum(n * n for n in lens) / sum(lens), 'samples [2048]'),   # n² keys, not n(n+1)/2
    ('09', 1): (lambda value, unit_from, unit_to: str(value), 'should say'),
    ('09', 2): (lambda text: [], 'the calls'),
    ('09', 3): (_agent_without_results, 'time(s)'),
    ('10', 1): (lambda k, n, z=1.96: (k / n - z * math.sqrt(k / n * (1 - k / n) / n), k / n + z * math.sqrt(k / n * (1 - k / n) / n)), '23/24'),
    ('10', 2): (lambda: ['lora.r=8', 'optim.lr=2e-4'], 'quantization.bits'),
    ('10', 3): (lambda reply, name, author: name.lower() in reply.lower(), 'should be False'),
    ('10a', 1): (_set_in_place, 'changed the config it was given'),
    ('10a', 2): (lambda text: __import__('yaml').safe_load(text), "'1e-3': expected 0.001 (float)"),   # YAML 1.1's text
    ('10a', 3): (lambda a, b: sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)), "'lora.r=8'"),   # whole sections
    ('10b', 1): (lambda env: (int(env.get('RANK', 0)), int(env.get('WORLD_SIZE', 1)), int(env.get('LOCAL_RANK', 0))), "'RANK': '2'"),
    ('10b', 2): (lambda micro, rank, world: micro[rank::world], 'the micro-batches'),          # strided, not the trainer's blocks
    ('10b', 3): (lambda losses, tokens: (sum(l * t for l, t in zip(losses, tokens)) / sum(tokens), sum(tokens)), 'the loss'),   # token-weighted
    ('10c', 1): (lambda d: sorted(__import__('pathlib').Path(d).glob('checkpoint-*')), 'the checkpoints'),   # by name, unfinished ones too
    ('10c', 2): (lambda steps, keep: sorted(steps)[:-keep], 'keep=0'),                 # [:-0] deletes nothing
    ('10c', 3): (_write_in_place, 'failed half-way'),
    ('10d', 1): (lambda n, step, b, acc, seed: [list(range(step * b * acc + m * b, step * b * acc + (m + 1) * b)) for m in range(acc)],
                 'the micro-batches'),                               # no shuffling
    ('10d', 2): (lambda ms, ep, n, b, acc, w: ms or max(1, int(ep * n / (b * acc * w))), 'the steps'),   # rounded down
    ('10d', 3): (lambda step, total, lr, wr: lr * 0.5 * (1 + math.cos(math.pi * step / total)), 'warm-up'),   # no warm-up
    ('10e', 1): (lambda msgs, system: ([{'role': 'system', 'content': system}] if system else []) + ([{'role': 'user', 'content': msgs}]
                 if isinstance(msgs, str) else list(msgs)), 'the messages'),          # keeps the old system message too
    ('10e', 2): (lambda t=0.0, p=1.0, k=0, r=1.0: {'do_sample': t > 0, 'temperature': t, 'top_p': p, 'top_k': k}, 'the options'),
    ('10e', 3): (lambda tok, q, system=None: tok(q)['input_ids'], 'the token ids'),   # the question without its template
    ('10f', 1): (lambda argv: {'config': argv[1], 'work_dir': None, 'resume': '--resume' in argv, 'max_steps': None,
                               'deepspeed': None, 'cfg_options': []}, 'the arguments'),    # reads only the config and --resume
    ('10f', 2): (lambda argv, n, python='python': ['torchrun', '--nproc_per_node', n, '-m', 'learnft.cli', *argv], 'the command'),
    ('10f', 3): (lambda config, wd=None: __import__('pathlib').Path(wd or 'work_dirs')/config, 'the work dir'),   # keeps folder and .yaml
    ('10h', 1): (lambda h: [{'role': m['role'], 'content': str(m['content'])} for m in h or []], 'the messages'),   # a list of parts as its repr
    ('10h', 2): (lambda msg, h: ('', list(h or []) + [{'role': 'user', 'content': msg}]), '(box, messages)'),       # appends blank messages
    ('10h', 3): (lambda pieces: [''.join(pieces[:i + 1]) for i in range(len(pieces))], 'the texts shown'),          # not stripped, repeats
    ('10g', 1): (lambda w, n_head: w, 'should be the original row'),
    ('10g', 2): (_q8_0_round_half_even, 'should be'),
    ('10g', 3): (lambda n: n.replace('model.layers.', 'blk.').replace('model.', ''), 'the name'),
}


def test_every_exercise_has_a_wrong_answer_here():
    assert set(WRONG) == set(ex.EXERCISES), set(ex.EXERCISES) ^ set(WRONG)


@pytest.mark.parametrize('key', sorted(WRONG), ids=lambda k: f'{k[0]}.{k[1]}')
def test_a_wrong_answer_is_named(key):
    fn, words = WRONG[key]
    with pytest.raises(ExerciseFailed, match=re.escape(words)) as e:
        check(*key, fn)
    assert str(e.value).startswith(f'{key[0]}.{key[1]} ')


def test_not_attempted_and_errors():
    def stub(*args): raise NotImplementedError
    assert not check('05', 2, stub) and repr(check('05', 2, stub)).startswith('… 05.2')
    with pytest.raises(ExerciseFailed, match='your function raised ZeroDivisionError'):
        check('05', 2, lambda alpha, r: 1 / 0)
    with pytest.raises(KeyError, match='lesson 05 has exercises'): check(5, 9, stub)
    with pytest.raises(KeyError, match='no exercises for lesson'): check('77', 1, stub)
    assert ex.get_exercise('01_chat_templates', 1) is ex.get_exercise(1, 1)


def test_every_lesson_has_three_exercises():
    lessons = {l for l, _ in ex.EXERCISES}
    assert lessons >= {f'{i:02d}' for i in range(11)}
    assert all(len(ex.exercises(l)) >= 3 for l in lessons)
