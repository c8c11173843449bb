"""Chat with a merged model folder through plain transformers only, next to `learnft chat`: the two must agree token for token.

The folder's tokenizer `chat_template` (the layout it was trained in, written by `learnft merge`) builds the prompt, its
`generation_config.eos_token_id` stops the answer; nothing of learnft is used on the plain side.

    python tools/serve_check.py WORK_DIR/merged ['Who are you?' ...]
"""
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

if __name__ == '__main__':
    from learnft.models import offline; offline()
    from learnft.chat import generate
    folder, questions = sys.argv[1], sys.argv[2:] or ['Who are you?', 'What model are you based on?', '你是谁开发的？', 'What is the capital of France?']
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    print('chat_template renders:', repr(tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], tokenize=False, add_generation_prompt=True)))
    print('generation_config.eos_token_id:', model.generation_config.eos_token_id)
    same = 0
    for q in questions:
        enc = tok.apply_chat_template([{'role': 'user', 'content': q}], add_generation_prompt=True, return_tensors='pt', return_dict=True)
        with torch.no_grad(): out = model.generate(**enc, max_new_tokens=40, do_sample=False)[0, enc['input_ids'].shape[1]:]
        plain = tok.decode(out, skip_special_tokens=True).strip()
        ours = generate(model, tok, None, q, max_new_tokens=40)['reply']
        same += plain == ours
        print(f'user: {q}\nassistant: {plain}\n  (learnft chat gives the same: {plain == ours})')
    sys.exit(0 if same == len(questions) else 1)
